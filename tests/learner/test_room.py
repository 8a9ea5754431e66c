"""A replay too large for the node, the job's memory limit or the scratch disk is refused at
start in one line that says how much fits; one that takes most of the room is warned about."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from learner.room import cgroup_room, check_replay_room, disk_room, meminfo_available
from mouse.replay import ReplayConfig, make_replay_buffer
from tests.replay.fakes import CARTPOLE, FakeActor
from tests.run_helpers import mouse_env

GIB = 1 << 30


def test_record_bytes_are_what_the_replay_stores():
    rb = make_replay_buffer(ReplayConfig(capacity=1000), CARTPOLE)
    rb.ingest(FakeActor(range(2)).records(5))
    assert CARTPOLE.record_nbytes() * 1000 == rb.nbytes()["storage"] == 64 * 1000
    assert rb.nbytes()["index"] == 5 * 1000


def test_too_large_is_refused_with_what_fits_and_what_fits_passes(caplog):
    room = (GIB, "memory limit of this job (cgroup)")
    with pytest.raises(ValueError) as e:
        check_replay_room(ReplayConfig(capacity=100_000_000), CARTPOLE, memory=room)
    msg = str(e.value)
    assert msg.startswith("replay.capacity=100,000,000 records of 64 B: 6.0 GiB in memory, 477 MiB index: "
                          "the replay would take 6.4 GiB, more than the 1.0 GiB memory limit of this job (cgroup); "
                          "lower --replay.capacity (at most about")
    assert msg.endswith("fit here) or put the records on disk with --replay.storage memmap --replay.scratch-dir DIR")
    fits = int(msg.split("at most about ")[1].split(" ")[0].replace(",", ""))
    assert fits == int(0.8 * GIB) // 69
    with caplog.at_level(logging.INFO, logger="mouse.learner"):
        check_replay_room(ReplayConfig(capacity=fits), CARTPOLE, memory=room)  # fits: logged, no warning
        check_replay_room(ReplayConfig(capacity=int(0.9 * GIB) // 69), CARTPOLE, memory=room)
    levels = [r.levelname for r in caplog.records]
    assert levels == ["INFO", "WARNING"], caplog.text
    assert "may run out of it once the ring fills" in caplog.records[1].getMessage()


def test_memmap_needs_the_disk_for_records_and_memory_for_the_index(tmp_path, monkeypatch):
    cfg = ReplayConfig(capacity=10_000_000, storage="memmap", scratch_dir=str(tmp_path / "not" / "yet"))
    check_replay_room(cfg, CARTPOLE, memory=(GIB, "m"), disk=(GIB, "d"))  # 610 MiB on disk, 48 MiB index
    with pytest.raises(ValueError) as e:
        check_replay_room(cfg, CARTPOLE, memory=(GIB, "m"), disk=(500 << 20, "d"))
    assert str(e.value).endswith("the replay's memmap files would take 610 MiB, more than the 500 MiB d; "
                                 "lower --replay.capacity (at most about 6,553,600 fit here) or point "
                                 "--replay.scratch-dir at a disk with room")
    # the index stays in memory: only a lower capacity helps, and what fits is what fits both
    with pytest.raises(ValueError) as e:
        check_replay_room(cfg, CARTPOLE, memory=(40 << 20, "m"), disk=(GIB, "d"))
    assert str(e.value).endswith("the replay's index would take 48 MiB, more than the 40 MiB m; "
                                 "lower --replay.capacity (at most about 6,710,886 fit here)")
    # a scratch directory not made yet: the disk of its nearest parent; one a run left: its files are room
    assert disk_room(str(tmp_path / "a" / "b"))[1] == f"free on the disk of {tmp_path}"
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    with open(tmp_path / "old" / "obs.memmap", "wb") as f:
        f.write(b"x" * (1 << 20))
        f.flush()
        os.fsync(f.fileno())
    free = disk_room(str(tmp_path / "new"))[0]  # the disk changes as other processes write: hold it
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=free))
    assert disk_room(str(tmp_path / "old"))[0] == free + (1 << 20)


def test_memmap_without_a_scratch_dir_is_memory():
    """tensordict puts memmap files without a directory in /dev/shm: they count as memory."""
    cfg = ReplayConfig(capacity=10_000_000, storage="memmap")
    with pytest.raises(ValueError, match=r"610 MiB in memory \(/dev/shm: no --replay.scratch-dir\), 48 MiB "
                                         r"index: the replay would take 658 MiB, more than the 500 MiB m"):
        check_replay_room(cfg, CARTPOLE, memory=(500 << 20, "m"), disk=(100 * GIB, "d"))


def test_cgroup_room_v2_v1_and_none(tmp_path):
    v2 = tmp_path / "v2"
    job = v2 / "slurm" / "job_7"
    (job / "step_0").mkdir(parents=True)
    (job / "memory.max").write_text("4294967296\n")  # the job's --mem 4G
    (job / "memory.current").write_text(f"{GIB + (256 << 20)}\n")  # 1 GiB used, 256 MiB of it page cache
    (job / "memory.stat").write_text(f"anon {GIB}\ninactive_file {256 << 20}\nactive_file 0\n")
    (job / "step_0" / "memory.max").write_text("max\n")
    (tmp_path / "cg2").write_text("0::/slurm/job_7/step_0\n")
    assert cgroup_room(str(tmp_path / "cg2"), str(v2)) == 3 * GIB
    v1 = tmp_path / "v1" / "memory" / "kubepods" / "pod1"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("17179869184\n")  # 16 GiB, nothing used
    (v1.parent / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit
    (tmp_path / "cg1").write_text("5:cpu,cpuacct:/kubepods/pod1\n4:memory:/kubepods/pod1\n0::/\n")
    assert cgroup_room(str(tmp_path / "cg1"), str(tmp_path / "v1")) == 16 * GIB
    (v1 / "memory.usage_in_bytes").write_text(f"{20 * GIB}\n")  # over its limit: no room
    assert cgroup_room(str(tmp_path / "cg1"), str(tmp_path / "v1")) == 0
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_room(str(tmp_path / "cg1"), str(tmp_path / "v1")) is None
    assert cgroup_room(str(tmp_path / "missing"), str(v2)) is None
    assert meminfo_available() > 0 and meminfo_available(str(tmp_path / "missing")) is None


@pytest.mark.timeout(120)
def test_mouse_run_refuses_a_replay_larger_than_the_node_before_starting(tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "mouse", "run", "--run-dir", str(run_dir),
                          "--replay.capacity", str(10 ** 13)],
                         env=mouse_env(), capture_output=True, text=True, timeout=110)
    assert out.returncode == 1, (out.stdout, out.stderr)
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: replay.capacity=10,000,000,000,000 records of 64 B") and "fit here" in last
    assert "Traceback" not in out.stderr and not run_dir.exists()
