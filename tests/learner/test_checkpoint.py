"""Checkpoints survive kills, damaged files and full disks.

In-process learners (built, not bound: ``Learner(cfg, run_dir)`` is what `mouse learner`
builds before it listens) for what a file on disk does to a resume; real `mouse learner`
processes for a SIGKILL, an exit code and a disk that fills up under a running learner.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal

import pytest
import torch

from learner.checkpoint import CheckpointError, load_checkpoint, previous_path, save_checkpoint
from learner.learner import Learner
from learner.monitor import Monitor
from mouse.cli import parse_run_config
from mouse.config import save_config
from mouse.replay import make_replay_buffer
from mouse.status import read_status
from tests.disk import Filler, small_disk  # noqa: F401 (a fixture)
from tests.replay.test_buffer import assert_same, snapshot
from tests.run_helpers import SMALL, Proc, procs, stream_records, wait_for  # noqa: F401 (procs: a fixture)

START_S = 120  # generous: other jobs may be using both cores while torch imports
CAPACITY = 3000


def config(run_dir, *flags):
    return parse_run_config(["--run-dir", str(run_dir), *SMALL, "--replay.capacity", str(CAPACITY),
                              *map(str, flags)])


def learner_with_history(run_dir, *flags) -> Learner:
    """A learner that saved twice: checkpoint.prev.pt at 10 updates, checkpoint.pt at 20, each
    with its own weights and Adam state (one step with made-up gradients before each save)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    learner = Learner(config(run_dir, *flags), run_dir)
    for updates in (10, 20):
        for p in learner.model.parameters():
            p.grad = torch.full_like(p, updates / 10)
        learner.optimizer.step()
        learner.loop.updates = updates
        assert learner.save()
    return learner


def truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path):
    path.write_bytes(b"")


def garbage(path):
    path.write_bytes(random.Random(0).randbytes(4096))


def wrong_keys(path):
    torch.save({"weights": torch.zeros(3), "updates": 5}, path)


def plain_pickle(path):  # a pickle (no torch zip around it) that would call os.system
    path.write_bytes(pickle.dumps({"model": os.system, "updates": 1}))


def unsafe_pickle(path):  # a torch file whose pickle would call os.system
    torch.save({"model": os.system, "updates": 1}, path)


def other_config(path):
    other = path.parent.parent / "other"
    other.mkdir()
    Learner(config(other, "--model.hidden-dim", 64), other).save()
    shutil.copy(other / "checkpoint.pt", path)


DAMAGES = [truncated, empty, garbage, wrong_keys, plain_pickle, unsafe_pickle, other_config]
REASONS = {  # what the one line says about each damaged file
    "truncated": "truncated or damaged (PytorchStreamReader failed reading zip archive",
    "empty": "empty file)", "garbage": "not a torch checkpoint (no zip archive))",
    "wrong_keys": "no model, optimizer, version, env_steps entries: not a mouse checkpoint)",
    "plain_pickle": "not a torch checkpoint (no zip archive))",
    "unsafe_pickle": "not a weights-only torch file: Trying to load unsupported GLOBAL posix.system",
    "other_config": "its model does not match this run's config: embed.obs.weight: [64, 4] in the file, "
                    "[32, 4] here",
}


def same_state(a, b) -> bool:
    """Equal nested state dicts (tensors compared exactly)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_a_save_keeps_the_previous_checkpoint(tmp_path):
    learner_with_history(tmp_path / "run")
    run = tmp_path / "run"
    assert load_checkpoint(run / "checkpoint.pt")["updates"] == 20
    assert load_checkpoint(run / "checkpoint.prev.pt")["updates"] == 10
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]  # no staging files


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.__name__ for d in DAMAGES])
def test_a_damaged_checkpoint_resumes_from_the_previous_one(tmp_path, caplog, damage):
    run = tmp_path / "run"
    learner_with_history(run)
    prev = load_checkpoint(run / "checkpoint.prev.pt")
    damage(run / "checkpoint.pt")
    damaged = (run / "checkpoint.pt").read_bytes()

    resumed = Learner(config(run), run)

    assert (resumed.updates, resumed.loop.updates, resumed.resumed_from) == (10, 10, "checkpoint.prev.pt")
    assert same_state(resumed.model.state_dict(), prev["model"])
    assert same_state(resumed.optimizer.state_dict()["state"], prev["optimizer"]["state"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith(f"checkpoint.pt is unreadable ({REASONS[damage.__name__]}")
    assert warnings[0].endswith("; resuming from checkpoint.prev.pt (10 updates)")
    assert "weights_only=False" not in warnings[0]
    # the damaged file is kept for inspection, where the next save cannot overwrite it
    [kept] = run.glob("checkpoint.pt.corrupt-*")
    assert kept.read_bytes() == damaged and not (run / "checkpoint.pt").exists()
    assert resumed.save()
    assert load_checkpoint(run / "checkpoint.prev.pt")["updates"] == 10  # not rotated: nothing to rotate
    assert kept.read_bytes() == damaged


def test_a_checkpoint_lost_mid_rotation_resumes_from_the_previous_one(tmp_path, caplog):
    """Where the filesystem has no hard links the rotation renames: a kill between the two
    renames leaves only checkpoint.prev.pt."""
    run = tmp_path / "run"
    learner_with_history(run)
    (run / "checkpoint.pt").unlink()
    assert Learner(config(run), run).updates == 10
    assert "checkpoint.pt is missing; resuming from checkpoint.prev.pt (10 updates)" in caplog.messages


def test_the_replay_comes_back_as_the_checkpoint_saw_it(tmp_path):
    """A kill between the replay's save and the checkpoint's leaves a replay state newer than the
    checkpoint: the resume takes the one the checkpoint names, so counters and replay agree."""
    run = tmp_path / "run"
    learner = learner_with_history(run, "--learner.save-replay")
    learner.replay.ingest(stream_records(learner.info.spec, 400, stream_id=0))
    assert learner.save() and load_checkpoint(run / "checkpoint.pt")["replay_written"] == 400
    learner.replay.ingest(stream_records(learner.info.spec, 100, stream_id=1))
    learner.replay.save(learner.replay_dir)  # ... and killed before the checkpoint
    resumed = Learner(config(run, "--learner.save-replay"), run)
    assert (resumed.replay_written, len(resumed.replay), resumed.replay.num_streams) == (400, 400, 1)


def test_a_damaged_replay_is_set_aside_and_the_run_goes_on(tmp_path, caplog):
    run = tmp_path / "run"
    learner = learner_with_history(run, "--learner.save-replay")
    learner.replay.ingest(stream_records(learner.info.spec, 400, stream_id=0))
    assert learner.save()
    states = sorted((run / "replay").glob("state-*.pt"))
    for state in states:
        garbage(state)
    resumed = Learner(config(run, "--learner.save-replay"), run)
    assert resumed.updates == 20 and len(resumed.replay) == 0 and resumed.replay_written is None
    [aside] = run.glob("replay.corrupt-*")
    assert sorted(p.name for p in aside.glob("state-*")) == [p.name for p in states]
    assert not (run / "replay").exists()
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"no saved replay state in {run / 'replay'} loads: ")
    assert warning.endswith(f"; starting with an empty replay (moved to {aside.name})")


def both_damaged(run, newest, previous) -> dict[str, bytes]:
    """Two saved checkpoints, both damaged; returns the files' contents."""
    learner_with_history(run)
    newest(run / "checkpoint.pt")
    previous(run / "checkpoint.prev.pt")
    return {p.name: p.read_bytes() for p in run.iterdir()}


def test_no_usable_checkpoint_is_one_error_and_nothing_changes(tmp_path):
    run = tmp_path / "run"
    before = both_damaged(run, garbage, truncated)
    with pytest.raises(CheckpointError) as e:
        Learner(config(run), run)
    assert isinstance(e.value, ValueError)  # the command prints a ValueError as one line, exit 1
    assert str(e.value) == (f"no usable checkpoint in {run}: checkpoint.pt is unreadable (not a torch "
                            "checkpoint (no zip archive)); checkpoint.prev.pt is unreadable (truncated or damaged (PytorchStreamReader "
                            "failed reading zip archive: failed finding central directory)) (the files are left as "
                            "they are)")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.parametrize("with_config", [True, False], ids=["config.json", "no config.json"])
def test_the_learner_command_exits_1_with_one_line(tmp_path, with_config):
    """A run directory as a run leaves it (config.json beside the checkpoints), and as a run from
    before config.json was written leaves it (the command then reads the config from a checkpoint)."""
    run = tmp_path / "run"
    both_damaged(run, empty, garbage)
    if with_config:
        save_config(config(run), run / "config.json")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    proc = Proc("learner", ["learner", "--run-dir", run, "--replay.capacity", CAPACITY, *SMALL], tmp_path)
    assert proc.wait(START_S) == 1
    err = proc.err()
    assert "Traceback" not in err and "weights_only=False" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: no usable checkpoint in {run}: checkpoint.pt is unreadable (empty file); "
                      "checkpoint.prev.pt is unreadable (not a torch checkpoint (no zip archive)) (the files are left "
                      "as they are)"], err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


# --- a disk that fills up ------------------------------------------------------------------

def test_a_save_on_a_full_disk_fails_whole(small_disk):
    learner = learner_with_history(small_disk / "run")
    run = small_disk / "run"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    filler = Filler(small_disk)
    with pytest.raises(OSError):
        save_checkpoint(run / "checkpoint.pt", learner.model, learner.optimizer, learner.cfg,
                        version=0, updates=30, env_steps=0)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert learner.save() is False and learner.checkpoint_failures == 1
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    filler.release()
    assert learner.save() and load_checkpoint(run / "checkpoint.pt")["updates"] == 20
    assert previous_path(run / "checkpoint.pt").exists()


def test_metrics_lines_wait_out_a_full_disk(small_disk):
    """The learner writes metrics.jsonl every log interval: a full disk must not end the run there."""
    monitor = Monitor(config(small_disk, "--wandb.mode", "disabled"), small_disk)
    filler = Filler(small_disk)
    monitor.log({"perf/updates": 1.0}, step=1)  # does not raise
    filler.release()
    monitor.log({"perf/updates": 2.0}, step=2)
    monitor.finish()
    lines = [json.loads(line) for line in (small_disk / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]  # the first one waited in the buffer


def status(run) -> dict:
    return read_status(run / "status.json") or {}


def test_a_running_learner_outlives_a_full_disk(small_disk, procs):
    run = small_disk / "run"
    learner = procs("learner", ["learner", "--run-dir", run, "--learner.port", 0, *SMALL,
                                "--model.hidden-dim", 128,  # a checkpoint of ~0.8 MB
                                "--learner.checkpoint-every-s", 1, "--budget.max-env-steps", 0,
                                "--budget.max-minutes", 5])
    wait_for(lambda: status(run).get("address"), START_S, "the learner to listen", [learner])
    procs("actor", ["actor", "--learner", status(run)["address"], "--actor-id", 0])
    wait_for(lambda: status(run).get("checkpoints", 0) >= 1 and status(run)["updates"] > 0, START_S,
             "a checkpoint after some training", [learner])
    assert (run / "checkpoint.pt").stat().st_size > 512 * 1024  # twice the room left below
    # room for status.json and for minutes of metrics.jsonl lines, not for a checkpoint
    filler = Filler(small_disk, leave=256 * 1024)
    wait_for(lambda: status(run)["checkpoint_failures"] >= 2, 60, "two failed saves", [learner])
    failing = status(run)
    wait_for(lambda: status(run)["updates"] > failing["updates"], 60, "training to go on", [learner])
    assert status(run)["checkpoint_failures"] > 0 and status(run)["state"] == "running"

    filler.release()
    wait_for(lambda: status(run)["checkpoints"] > failing["checkpoints"], 60, "a save after the disk freed",
             [learner])
    saved = status(run)["last_checkpoint"]
    assert load_checkpoint(run / "checkpoint.pt")["updates"] >= saved["updates"] > failing["updates"]
    learner.popen.send_signal(signal.SIGTERM)
    assert learner.wait(120) == 0, learner.logs()
    assert "Traceback" not in learner.err()
    assert "saving to" in learner.err() and "No space left on device" in learner.err()


# --- kill -9 and restart -------------------------------------------------------------------

def test_a_killed_learner_resumes_model_optimizer_counters_and_replay(tmp_path, procs):
    run = tmp_path / "run"
    capacity = 1000  # small: the ring wraps within seconds
    flags = ["--run-dir", run, "--learner.port", 0, *SMALL, "--replay.capacity", capacity,
             "--learner.save-replay", "--learner.checkpoint-every-s", 1, "--budget.max-env-steps", 0,
             "--budget.max-minutes", 5]
    first = procs("learner", ["learner", *flags])
    wait_for(lambda: status(run).get("address"), START_S, "the learner to listen", [first])
    actor = procs("actor", ["actor", "--learner", status(run)["address"], "--actor-id", 0])
    # the replay has wrapped around its ring in a saved state, after some training
    wait_for(lambda: (status(run).get("last_checkpoint") or {}).get("replay_written", 0) > capacity + 200
             and status(run)["last_checkpoint"]["updates"] > 0, START_S, "a checkpoint with a wrapped replay",
             [first])
    first.popen.send_signal(signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL
    actor.kill_group()
    ckpt = load_checkpoint(run / "checkpoint.pt")
    saved_replay = tmp_path / "replay-at-kill"
    shutil.copytree(run / "replay", saved_replay)

    second = procs("learner-2", ["learner", *flags])
    wait_for(lambda: status(run).get("pid") == second.pid and status(run)["state"] == "running", START_S,
             "the restarted learner to run", [second])  # (its SIGTERM handler is in place by then)
    st = status(run)
    assert st["resumed_from"] == "checkpoint.pt"
    assert (st["updates"], st["env_steps"], st["weights_version"]) == \
        (ckpt["updates"], ckpt["env_steps"], ckpt["version"])
    assert st["replay_size"] == min(ckpt["replay_written"], capacity) == capacity
    second.popen.send_signal(signal.SIGTERM)  # no actor: nothing trains, the final save is the resume
    assert second.wait(120) == 0, second.logs()

    final = load_checkpoint(run / "checkpoint.pt")
    assert final["updates"] == ckpt["updates"]
    assert same_state(final["model"], ckpt["model"]) and same_state(final["optimizer"], ckpt["optimizer"])
    # the replay the restarted learner holds is the one saved with the checkpoint, row for row
    cfg = parse_run_config([str(f) for f in flags])
    at_kill, after = (make_replay_buffer(cfg.replay, None, seq_len=cfg.train.seq_len) for _ in range(2))
    assert at_kill.restore(saved_replay, ckpt["replay_written"]) == ckpt["replay_written"]
    assert after.restore(run / "replay") == ckpt["replay_written"]
    assert_same(snapshot(at_kill), snapshot(after))
