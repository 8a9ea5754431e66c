"""Incremental replay saves: only new rows are written, a save cut short leaves the previous one
whole, a restore picks the state asked for, and a full disk costs a save, not the buffer."""

from __future__ import annotations

import pytest
import torch

from mouse.replay import ReplayConfig, make_replay_buffer
from mouse.replay.buffer import ReplayMismatch, UnreadableReplay

from tests.disk import Filler, small_disk  # noqa: F401 (a fixture)

from .fakes import CARTPOLE, FakeActor
from .test_buffer import assert_same, snapshot

CAPACITY = 60


def build(tmp_path=None, storage="tensor", name="a"):
    scratch = str(tmp_path / name) if storage == "memmap" else None
    return make_replay_buffer(ReplayConfig(capacity=CAPACITY, storage=storage, scratch_dir=scratch),
                              CARTPOLE, seq_len=3)


def files(directory, kind):
    return sorted(p.name for p in directory.glob(f"{kind}-*.pt"))


def rows_in(directory, name):
    return len(torch.load(directory / name, weights_only=True)["time"])


def restored(directory, written=None):
    replay = build()
    return replay, replay.restore(directory, written)


@pytest.mark.parametrize("storage", ["tensor", "memmap"])
def test_each_save_writes_only_the_rows_since_the_last(tmp_path, storage):
    replay, actor, saved = build(tmp_path, storage), FakeActor([0, 1], episode_len=5), tmp_path / "saved"
    replay.ingest(actor.records(10))  # 20 rows
    assert replay.save(saved) == 20
    replay.ingest(actor.records(4))  # 8 rows
    assert replay.save(saved) == 28
    assert files(saved, "rows") == ["rows-000000000000-000000000020.pt", "rows-000000000020-000000000028.pt"]
    assert rows_in(saved, "rows-000000000020-000000000028.pt") == 8
    assert_same(snapshot(replay), snapshot(restored(saved)[0]))
    replay.save(saved)  # nothing new: a new state, no new rows
    assert len(files(saved, "rows")) == 2


def test_saves_around_the_ring_keep_two_states_and_the_rows_they_need(tmp_path):
    replay, actor, saved = build(), FakeActor([0, 1, 2], episode_len=7), tmp_path / "saved"
    snapshots = {}
    for _ in range(12):  # 12 saves of 21 rows each: the 60-row ring wraps four times
        replay.ingest(actor.records(7))
        w = replay.save(saved)
        snapshots[w] = snapshot(replay)
        assert files(saved, "state") == [f"state-{x:012d}.pt" for x in sorted(snapshots)[-2:]]
        again, got = restored(saved)
        assert got == w
        assert_same(snapshots[w], snapshot(again))
        # on disk: the rows the two kept states hold, no more than an interval beyond the ring
        stored = sum(rows_in(saved, f) for f in files(saved, "rows"))
        assert stored <= CAPACITY + 2 * 21
    # the previous state is whole too: what a restore falls back to
    prev = sorted(snapshots)[-2]
    assert_same(snapshots[prev], snapshot(restored(saved, prev)[0]))


def saved_twice(saved):
    """A buffer saved after 20 rows and again after 32: (actor, first, its snapshot, second)."""
    replay, actor = build(), FakeActor([0, 1], episode_len=5)
    replay.ingest(actor.records(10))
    first = replay.save(saved)
    before = snapshot(replay)
    replay.ingest(actor.records(6))
    return actor, first, before, replay.save(saved)


def test_a_save_cut_short_leaves_the_previous_state(tmp_path):
    """A kill mid-save leaves a row file and no state, or a state file torn before its rename
    (never under its own name, but a damaged disk can do it): either way the previous state loads."""
    saved = tmp_path / "saved"
    actor, first, before, second = saved_twice(saved)
    newest = saved / f"state-{second:012d}.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # torn
    again, got = restored(saved)
    assert got == first
    assert_same(before, snapshot(again))
    # the torn state and the rows only it named are gone: the next save does not mix them in
    assert files(saved, "state") == [f"state-{first:012d}.pt"]
    assert files(saved, "rows") == [f"rows-000000000000-{first:012d}.pt"]
    again.ingest(actor.records(3))
    assert_same(snapshot(again), snapshot(restored(saved, again.save(saved))[0]))


def test_restore_takes_the_state_asked_for_and_forgets_newer_ones(tmp_path):
    """The learner asks for the state its checkpoint names: a kill between the replay's save
    and the checkpoint's leaves a newer replay state, which is not the checkpoint's."""
    saved = tmp_path / "saved"
    _, first, before, second = saved_twice(saved)
    assert restored(saved, 12345)[1] == second  # a state that is not there: the newest one
    again, got = restored(saved, first)
    assert got == first
    assert_same(before, snapshot(again))
    assert files(saved, "state") == [f"state-{first:012d}.pt"]


def test_restore_refuses_another_capacity_and_reports_an_empty_directory(tmp_path):
    replay = build()
    replay.ingest(FakeActor([0]).records(5))
    replay.save(tmp_path / "saved")
    with pytest.raises(ReplayMismatch, match=f"capacity {CAPACITY}"):
        make_replay_buffer(ReplayConfig(capacity=CAPACITY + 1), CARTPOLE).restore(tmp_path / "saved")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnreadableReplay, match="holds no saved replay state"):
        build().restore(tmp_path / "empty")


def test_a_first_save_into_a_used_directory_replaces_what_was_there(tmp_path):
    saved = tmp_path / "saved"
    old = build()
    old.ingest(FakeActor([5], episode_len=3).records(50))
    old.save(saved)
    replay = build()
    replay.ingest(FakeActor([0, 1]).records(4))
    w = replay.save(saved)
    assert files(saved, "state") == [f"state-{w:012d}.pt"] and len(files(saved, "rows")) == 1
    assert_same(snapshot(replay), snapshot(restored(saved)[0]))


def test_a_full_disk_fails_a_save_and_the_next_save_catches_up(small_disk):
    replay, actor, saved = build(), FakeActor([0, 1], episode_len=5), small_disk / "replay"
    replay.ingest(actor.records(10))
    first = replay.save(saved)
    before = snapshot(replay)
    listing = sorted(p.name for p in saved.iterdir())
    filler = Filler(small_disk)
    replay.ingest(actor.records(6))
    with pytest.raises(OSError):
        replay.save(saved)
    assert sorted(p.name for p in saved.iterdir()) == listing  # nothing half-written left behind
    assert_same(before, snapshot(restored(saved, first)[0]))
    filler.release()
    replay.ingest(actor.records(3))
    w = replay.save(saved)
    assert w == first + 18  # both intervals' rows: the failed save's and this one's
    assert_same(snapshot(replay), snapshot(restored(saved)[0]))
