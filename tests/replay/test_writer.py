"""FifoSliceWriter against TorchRL's RoundRobinWriter, as TorchRL's own readers see the storage."""

from __future__ import annotations

import pytest
import torch
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer, RoundRobinWriter
from torchrl.data.replay_buffers.samplers import RandomSampler, SliceSampler

from mouse.replay.writer import FifoSliceWriter

from .fakes import FakeActor

CAPACITY = 16


class NoticeLog(RandomSampler):
    """Records the update notices a buffer attached to the storage receives (TorchRL's
    prioritized samplers reset written slots' priorities on them)."""

    def __init__(self):
        super().__init__()
        self.notices: list[list[int]] = []

    def mark_update(self, index, *, storage=None) -> None:
        self.notices.append(torch.as_tensor(index).tolist())


def readers(storage) -> list[ReplayBuffer]:
    """TorchRL buffers sampling ``storage`` (attached to it), each with its own seeded generator.
    Each relies on a different part of what a write records in the storage:

    * SliceSampler: length and last write position (a full storage's one stream is one
      trajectory cut there);
    * SliceSampler caching boundaries: the content revision (the cache is keyed on it);
    * NoticeLog: the update notice to attached buffers, compared as recorded;
    * fragmented SliceSampler: notice and revision together (its incremental index).
    """
    samplers = [SliceSampler(slice_len=2, traj_key="stream_id"),
                SliceSampler(slice_len=2, traj_key="stream_id", cache_values=True),
                NoticeLog(),
                SliceSampler(slice_len=2, traj_key="stream_id", step_key="policy_version", fragmented=True)]
    return [ReplayBuffer(storage=storage, sampler=s, generator=torch.Generator().manual_seed(0))
            for s in samplers]


def chunks():
    """One stream's records in writes of various sizes (the fourth write onwards wraps), then a
    write of the whole capacity in two stream blocks: length and write position stay as they
    were, only the contents (and so the trajectory boundaries) change."""
    actor = FakeActor([0], episode_len=100)
    for rows in (6, 2, 8, 4, 16, 10, 3, 1):
        yield actor.records(rows)
    yield torch.cat([FakeActor([1]).records(CAPACITY // 2), FakeActor([2]).records(CAPACITY // 2)])


@pytest.mark.parametrize("storage", ["tensor", "memmap"])
def test_slice_writes_look_to_torchrl_like_round_robin_writes(tmp_path, storage):
    """FifoSliceWriter copies into the storage's columns itself: returned indices, length,
    contents, the writer's checkpoint state and TorchRL's samples stay those of a
    RoundRobinWriter's buffer, wrap-around included."""
    def build(writer, name):
        store = (LazyMemmapStorage(CAPACITY, scratch_dir=tmp_path / name) if storage == "memmap"
                 else LazyTensorStorage(CAPACITY))
        return ReplayBuffer(storage=store, writer=writer), readers(store)

    (ours, our_readers), (theirs, their_readers) = build(FifoSliceWriter(), "ours"), build(RoundRobinWriter(), "theirs")
    for chunk in chunks():
        assert torch.equal(ours.extend(chunk), theirs.extend(chunk))
        assert len(ours) == len(theirs)
        assert (ours.storage[:] == theirs.storage[:]).all()
        assert ours.writer.state_dict() == theirs.writer.state_dict()  # cursor and write count
        for mine, reference in zip(our_readers, their_readers):
            # each stored (stream, step) is unique, so equal samples are the same storage rows
            assert (mine.sample(32) == reference.sample(32)).all(), mine.sampler
    notices = [r.sampler.notices for r in (our_readers[2], their_readers[2])]
    assert notices[0] == notices[1] and len(notices[0]) == 9
