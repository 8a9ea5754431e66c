"""Which windows the replay holds: hand-computed cases, a randomized oracle check, uniformity."""

from __future__ import annotations

import random

import pytest
import torch

from mouse.replay import NoWindowError, ReplayConfig, make_replay_buffer

from .fakes import CARTPOLE, FakeActor, oracle_windows, stored_windows, window_ids, window_problems

# ops: ("emit", n_steps, streams) | ("skip", n_steps, streams) | ("restart", streams); streams None = all
CASES = [
    # name, streams, episode_len, capacity, S, ops, expected {(stream, first step)}
    ("one chunk", [0], 4, 100, 3, [("emit", 6, None)], {(0, 0), (0, 1), (0, 2), (0, 3)}),
    ("windows span chunks", [0], 4, 100, 3,
     [("emit", 2, None), ("emit", 2, None), ("emit", 2, None)], {(0, 0), (0, 1), (0, 2), (0, 3)}),
    ("windows span episode boundaries", [0], 2, 100, 3, [("emit", 5, None)], {(0, 0), (0, 1), (0, 2)}),
    ("a gap splits the stream", [0], 4, 100, 3,
     [("emit", 3, None), ("skip", 2, None), ("emit", 3, None)], {(0, 0), (0, 5)}),
    ("a restart splits the stream", [0], 4, 100, 3,
     [("emit", 3, None), ("restart", None), ("emit", 3, None)], {(0, 0), (0, 3)}),
    ("a reset after a finished episode continues it", [0], 3, 100, 3,
     [("emit", 3, None), ("restart", None), ("emit", 3, None)], {(0, 0), (0, 1), (0, 2), (0, 3)}),
    ("interleaved streams stay apart", [0, 1], 4, 100, 3, [("emit", 4, None)],
     {(0, 0), (0, 1), (1, 0), (1, 1)}),
    ("interleaved streams across chunks", [0, 1], 4, 100, 3, [("emit", 2, None), ("emit", 2, None)],
     {(0, 0), (0, 1), (1, 0), (1, 1)}),
    ("a gap in one stream only", [0, 1], 4, 100, 3,
     [("emit", 2, None), ("skip", 1, [1]), ("emit", 2, None)], {(0, 0), (0, 1)}),
    ("eviction drops the oldest windows", [0, 1], 4, 8, 3,
     [("emit", 6, [0]), ("emit", 4, [1])], {(0, 2), (0, 3), (1, 0), (1, 1)}),
    ("an evicted predecessor is not joined", [0, 1], 4, 6, 2,
     [("emit", 2, [0]), ("emit", 6, [1]), ("emit", 2, [0])], {(0, 2), (1, 2), (1, 3), (1, 4)}),
    ("a partly evicted tail joins from its present rows", [0, 1], 4, 7, 3,
     [("emit", 3, [0]), ("emit", 4, [1]), ("emit", 2, [0])], {(0, 2), (1, 0), (1, 1)}),
    ("S=1: every record is a window", [0, 1], 4, 100, 1,
     [("emit", 2, None), ("skip", 1, [0]), ("emit", 1, None)],
     {(0, 0), (0, 1), (0, 3), (1, 0), (1, 1), (1, 2)}),
]


def run_ops(replay, actor: FakeActor, ops) -> None:
    for op in ops:
        if op[0] == "emit":
            replay.ingest(actor.records(op[1], op[2]))
        elif op[0] == "skip":
            actor.skip(op[1], op[2])
        else:
            actor.restart(op[1])


@pytest.mark.parametrize("name,streams,ep_len,capacity,S,ops,expected", CASES, ids=[c[0] for c in CASES])
def test_window_cases(name, streams, ep_len, capacity, S, ops, expected):
    replay = make_replay_buffer(ReplayConfig(capacity=capacity), CARTPOLE, seq_len=S)
    run_ops(replay, FakeActor(streams, ep_len), ops)
    assert stored_windows(replay) == expected
    assert replay.num_windows == len(expected)
    batch = replay.sample(64, S)
    assert batch.batch_size == torch.Size([64, S])
    assert not window_problems(batch)
    assert set(window_ids(batch)) <= expected


def test_no_window_raises_a_clear_error():
    replay = make_replay_buffer(ReplayConfig(capacity=100), CARTPOLE, seq_len=8)
    with pytest.raises(NoWindowError, match="no window of 8 consecutive records"):
        replay.sample(4)
    replay.ingest(FakeActor([0, 1]).records(7))  # 7 < 8 steps per stream
    with pytest.raises(NoWindowError, match="14 steps stored"):
        replay.sample(4)


@pytest.mark.parametrize("seed", range(12))
def test_random_histories_match_a_brute_force_oracle(seed):
    """Random chunks, gaps, restarts and wrap-around; S changes midway (the index is rebuilt)."""
    rng = random.Random(seed)
    streams = list(range(rng.randint(1, 5)))
    actor = FakeActor(streams, episode_len=rng.randint(2, 7))
    S = rng.randint(1, 6)
    replay = make_replay_buffer(ReplayConfig(capacity=rng.randint(20, 120)), CARTPOLE, seq_len=S)
    touched: set[int] = set()  # streams that lost steps or restarted since their last record
    for i in range(120):
        r = rng.random()
        sub = rng.sample(streams, rng.randint(1, len(streams)))
        fresh = [s for s in sub if s not in touched]  # a gap and a restart together can look seamless
        if r < 0.1:
            n = rng.randint(1, 9)
            if n % actor.episode_len:
                actor.skip(n, fresh)
                touched.update(fresh)
        elif r < 0.15:
            actor.restart(fresh)
            touched.update(fresh)
        elif r < 0.2:
            S = rng.randint(1, 8)
            try:
                replay.sample(1, S)  # re-indexes for the new S
            except NoWindowError:
                pass
        else:
            replay.ingest(actor.records(rng.randint(1, min(12, replay.cfg.capacity // len(sub))), sub))
            touched.difference_update(sub)
        if i % 10 == 0 or i == 119:
            assert stored_windows(replay) == oracle_windows(replay, S), f"step {i}"


def grouped_arrays(chunk) -> dict:
    """A chunk as the learner's ingest stores it: numpy arrays, grouped by stream (stable)."""
    order = torch.argsort(chunk["stream_id"], stable=True)
    return {k: v[order].numpy() for k, v in chunk.items()}


def present(state: dict, capacity: int) -> list:
    """The sampler's streams with the positions still present in their tails: a tail drops its
    overwritten positions when the stream next goes on, which one write per chunk may do at an
    earlier chunk than a burst (both only ever join from present rows)."""
    oldest = state["written"] - capacity
    return [[*st[:4], [g for g in st[4] if g >= oldest]] for st in state["streams"]]


@pytest.mark.parametrize("seed", range(12))
def test_bursts_index_exactly_like_one_write_per_chunk(seed):
    """Several chunks in one write (the learner's ingest bursts: many pieces of each stream,
    segments running through pieces shorter than S, gaps and restarts between chunks of one
    burst, wrap-around, S changing) leave the sampler's whole state as one write per chunk:
    links, window starts, each stream's last record and tail, and the streams' order; and the
    windows are the brute-force oracle's."""
    rng = random.Random(seed)
    streams = list(range(rng.randint(1, 4)))
    actor = FakeActor(streams, episode_len=rng.randint(2, 7))
    S, capacity = rng.randint(1, 8), rng.randint(24, 120)
    one, burst = (make_replay_buffer(ReplayConfig(capacity=capacity), CARTPOLE, seq_len=S) for _ in range(2))
    touched: set[int] = set()  # as in the oracle test: a gap and a restart together can look seamless
    for i in range(40):
        chunks = []
        for _ in range(rng.randint(1, 6)):
            sub = rng.sample(streams, rng.randint(1, len(streams)))
            fresh = [s for s in sub if s not in touched]
            r = rng.random()
            if r < 0.15 and (n := rng.randint(1, 9)) % actor.episode_len:
                actor.skip(n, fresh)
                touched.update(fresh)
            elif r < 0.25:
                actor.restart(fresh)
                touched.update(fresh)
            chunks.append(actor.records(rng.randint(1, min(5, capacity // len(sub))), sub))
            touched.difference_update(sub)
        if rng.random() < 0.1:
            S = rng.randint(1, 8)
            for replay in (one, burst):
                replay.sampler.set_seq_len(S)
        for chunk in chunks:
            one.ingest(chunk)
        burst.ingest_arrays([grouped_arrays(c) for c in chunks])
        got, want = burst.sampler.state_dict(), one.sampler.state_dict()
        assert got["written"] == want["written"]
        assert present(got, capacity) == present(want, capacity), f"burst {i}"
        assert torch.equal(got["valid"], want["valid"]) and torch.equal(got["next"], want["next"]), f"burst {i}"
        assert burst.num_windows == one.num_windows == int(got["valid"].sum())
    assert stored_windows(burst) == oracle_windows(burst, S)


def chi2_uniform(counts: torch.Tensor) -> tuple[float, int]:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum()), len(counts) - 1


def coverage_setup():
    """Segments of very different lengths: uniform over streams would not be uniform over windows."""
    replay = make_replay_buffer(ReplayConfig(capacity=10_000, seed=7), CARTPOLE, seq_len=4)
    long, short = FakeActor([0], episode_len=5), FakeActor([1, 2, 3], episode_len=5)
    replay.ingest(long.records(150))
    for _ in range(6):
        replay.ingest(short.records(6))
        short.skip(2)
    return replay


def test_windows_are_sampled_uniformly():
    replay = coverage_setup()
    windows = sorted(oracle_windows(replay, 4))
    assert replay.num_windows == len(windows) == 147 + 3 * 6 * 3
    keys = torch.tensor([s * 100_000 + k for s, k in windows])  # sorted, like windows
    counts = torch.zeros(len(windows))
    for _ in range(100):
        batch = replay.sample(1000, 4)
        assert not window_problems(batch)
        drawn = batch["stream_id"][:, 0] * 100_000 + batch["policy_version"][:, 0]
        pos = torch.searchsorted(keys, drawn)
        assert bool((keys[pos.clamp_max(len(keys) - 1)] == drawn).all()), "a window that should not exist"
        counts += torch.bincount(pos, minlength=len(windows))
    chi2, df = chi2_uniform(counts)
    # chi2 ~ df +- sqrt(2 df); 6 sigma is a bound a uniform sampler fails about once in 1e9 seeds
    assert chi2 < df + 6 * (2 * df) ** 0.5, (chi2, df)
    assert counts.min() > 0


def test_the_uniformity_check_rejects_a_per_stream_uniform_sampler():
    """The statistic has power: choosing a stream first, then a window (SliceSampler-like), fails it."""
    replay = coverage_setup()
    windows = sorted(oracle_windows(replay, 4))
    by_stream = {}
    for i, (s, _) in enumerate(windows):
        by_stream.setdefault(s, []).append(i)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(len(windows))
    stream = torch.randint(len(by_stream), (100_000,), generator=g).tolist()
    for s, u in zip(stream, torch.rand(100_000, generator=g).tolist()):
        ids = by_stream[s]
        counts[ids[int(u * len(ids))]] += 1
    chi2, df = chi2_uniform(counts)
    assert chi2 > df + 6 * (2 * df) ** 0.5
