"""PrefetchBatchifier with real threads over a real TorchRL-backed replay."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from mouse.replay import PrefetchBatchifier, ReplayConfig, make_replay_buffer

from .fakes import CARTPOLE, FakeActor, window_problems


def filled(capacity=500, steps=20, streams=4, seq_len=8):
    replay = make_replay_buffer(ReplayConfig(capacity=capacity), CARTPOLE, seq_len=seq_len)
    replay.ingest(FakeActor(range(streams), episode_len=5).records(steps))
    return replay


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_batches_are_record_windows_on_the_device(device):
    replay = filled()
    with PrefetchBatchifier(replay, batch_size=16, seq_len=8, prefetch=2, num_workers=2,
                            device=device) as batches:
        assert batches.workers_alive == 2
        for _ in range(5):
            batch = next(batches)
            assert batch.batch_size == torch.Size([16, 8])
            assert set(batch.keys()) == set(CARTPOLE.fields())  # no torchrl bookkeeping keys
            assert batch.device.type == device
            assert batch["obs_continuous"].dtype == torch.float32 and batch["done"].dtype == torch.int64
            assert not window_problems(batch.cpu())
    assert batches.batches == 5
    assert batches.pin_memory == (device == "cuda")  # pinned gathers, non-blocking copies on CUDA


def test_a_seq_len_other_than_the_configured_one_reindexes():
    replay = filled(seq_len=4)
    with PrefetchBatchifier(replay, batch_size=8, seq_len=12, num_workers=1, device="cpu") as batches:
        batch = next(batches)
    assert batch.batch_size == torch.Size([8, 12]) and not window_problems(batch)
    assert replay.num_windows == 4 * (20 - 11)


def test_waits_for_data_then_delivers():
    replay = make_replay_buffer(ReplayConfig(capacity=500), CARTPOLE, seq_len=8)
    with PrefetchBatchifier(replay, batch_size=4, seq_len=8, num_workers=2, device="cpu") as batches:
        with pytest.raises(TimeoutError, match="0 steps stored"):
            batches.get(timeout=0.2)
        threading.Timer(0.1, lambda: replay.ingest(FakeActor([0]).records(8))).start()
        batch = batches.get(timeout=10)
    assert not window_problems(batch)
    assert set(batch["policy_version"][:, 0].tolist()) == {0}  # the only window


def test_close_stops_a_consumer_waiting_for_data():
    replay = make_replay_buffer(ReplayConfig(capacity=100), CARTPOLE, seq_len=8)
    batches = PrefetchBatchifier(replay, batch_size=4, seq_len=8, num_workers=2, device="cpu")
    outcome = []

    def consume():
        try:
            next(batches)
            outcome.append("batch")
        except StopIteration:
            outcome.append("stopped")

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.2)
    batches.close()
    consumer.join(5)
    assert outcome == ["stopped"]
    assert batches.workers_alive == 0
    with pytest.raises(StopIteration):
        next(batches)
    batches.close()  # idempotent


class FlakyReplay:
    """A real replay whose third sample fails, as a corrupt storage read would."""

    def __init__(self, replay):
        self.replay, self.calls = replay, 0

    def sample(self, batch_size, seq_len, **kw):
        self.calls += 1
        if self.calls == 3:
            raise ValueError("storage read failed")
        return self.replay.sample(batch_size, seq_len, **kw)

    def __len__(self):
        return len(self.replay)


def test_a_worker_exception_reaches_the_consumer():
    batches = PrefetchBatchifier(FlakyReplay(filled()), batch_size=4, seq_len=8, prefetch=1,
                                 num_workers=1, device="cpu")
    with pytest.raises(ValueError, match="storage read failed"):
        for _ in range(10):
            next(batches)
    with pytest.raises(ValueError, match="storage read failed"):  # and keeps reaching it
        next(batches)
    batches.close()
    assert batches.workers_alive == 0


def test_concurrent_ingest_and_sampling_give_no_corrupt_window():
    """An actor thread writes with gaps and restarts through many wrap-arounds while two
    workers sample; every window must still be S consecutive records of one stream."""
    replay = make_replay_buffer(ReplayConfig(capacity=3_000), CARTPOLE, seq_len=8)
    actor = FakeActor(range(16), episode_len=7)
    replay.ingest(actor.records(16))
    stop, errors, written = threading.Event(), [], [0]

    def ingest():
        try:
            g = torch.Generator().manual_seed(1)
            while not stop.is_set():
                streams = [s for s in range(16) if torch.rand(1, generator=g) < 0.6] or [0]
                u = float(torch.rand(1, generator=g))
                if u < 0.05:
                    actor.skip(3, streams)  # then emit: a gap
                elif u < 0.1:
                    actor.restart(streams)
                written[0] += replay.ingest(actor.records(int(torch.randint(1, 40, (1,), generator=g)), streams))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    writer = threading.Thread(target=ingest)
    writer.start()
    bad, n = [], 0
    try:
        with PrefetchBatchifier(replay, batch_size=64, seq_len=8, prefetch=4, num_workers=2,
                                device="cpu") as batches:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline or written[0] < 3 * replay.cfg.capacity:
                bad += window_problems(next(batches))
                n += 1
                if time.monotonic() > deadline + 20:
                    break
    finally:
        stop.set()
        writer.join(10)
    assert not errors, errors
    assert written[0] >= 3 * replay.cfg.capacity, "the buffer should have wrapped several times"
    assert n > 20 and not bad, (n, bad[:3])
