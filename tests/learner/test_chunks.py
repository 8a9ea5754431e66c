"""A burst of chunks checked together and stored with one write ends exactly as the same
chunks checked and ingested one by one (``wire.decode_chunk`` + ``StreamReplay.ingest``):
the same verdicts and reasons, the same rows in the same slots, the same windows.

(The same over the ingest thread's real sockets, credits included: test_ingest.py.)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from learner.chunks import Received, check_chunks, own_streams
from mouse import wire
from mouse.records import ALIVE, RecordSpec, StreamRecorder, episode_problems
from mouse.replay import ReplayConfig, make_replay_buffer

SPEC = dataclasses.replace(RecordSpec("continuous", (3,), 2), max_abs_obs=1e3, max_abs_reward=10.0)
NUM_ENVS, STEPS = 2, 4  # actor k owns streams 2k, 2k + 1; chunks of 8 records
TOKEN = "0" * wire.TOKEN_HEX


class Streams:
    """An actor's streams: each chunk continues the last one, episodes end now and then."""

    def __init__(self, stream_ids, seed):
        self.g = torch.Generator().manual_seed(seed)
        self.n = len(stream_ids)
        self.recorder = StreamRecorder(SPEC, list(stream_ids))
        self.pending = [self.recorder.reset(self._obs(), 3)]

    def _obs(self):
        return torch.randn(self.n, *SPEC.obs_shape, generator=self.g)

    def chunk(self):
        pending, self.pending = self.pending, []
        while len(pending) < STEPS:
            action = torch.randint(0, SPEC.num_actions, (self.n,), generator=self.g)
            ended = torch.rand(self.n, generator=self.g) < 0.2
            pending.append(self.recorder.step(action, self._obs(), torch.rand(self.n, generator=self.g),
                                              ended, torch.zeros(self.n, dtype=torch.bool), 3))
        return torch.stack(pending, dim=1).reshape(-1)  # [STEPS * n], stream-major


def episodes_of(td) -> list[dict]:
    """The episodes a chunk's records end, as an actor reports them."""
    ends = (td["done"] != ALIVE).nonzero().flatten().tolist()
    return [{"stream_id": int(td["stream_id"][j]), "return": 1.5, "length": int(td["time"][j]),
             "policy_version": 3} for j in ends]


def burst():
    """(actor_id, frames) of two actors' interleaved chunks, some of them bad (their records or
    the episodes they end)."""
    a, b = Streams([0, 1], seed=1), Streams([2, 3], seed=2)
    out = []
    for i in range(12):
        actor, streams = (0, a) if i % 2 == 0 else (1, b)
        td = streams.chunk()
        episodes = episodes_of(td)
        made_up = {"stream_id": 2 * actor, "return": 1.5, "length": 3, "policy_version": 3}
        if i == 2:
            episodes.append({**made_up, "stream_id": 3})  # actor 1's stream: foreign for actor 0
        if i == 10:
            episodes.append({**made_up, "return": 1e6})  # more than max_abs_reward per step: bad_values
        if i == 11:
            episodes.append(made_up)  # no record of the chunk ends it: bad_values
        if i == 4:
            td["reward"][-1] = math.nan  # bad_values: a gap in actor 0's streams follows
        if i == 7:
            td = td[torch.arange(len(td)).view(NUM_ENVS, STEPS).t().reshape(-1)]  # step-major: not grouped
        if i == 8:
            td["stream_id"][:] = 3  # actor 1's stream: foreign for actor 0
            td["time"] = torch.arange(len(td))
            td["done"].zero_()
            td["action"][0] = td["reward"][0] = 0
        # each actor numbers its own chunks
        out.append((actor, wire.encode_chunk(td, actor, TOKEN, i // 2, episodes=episodes)))
    return out


def one_by_one(chunks, replay):
    """Today's path: decode (copy + checks), then the stream check, then ingest, per chunk."""
    verdicts = []
    for actor, frames in chunks:
        try:
            header, td = wire.decode_chunk(frames, SPEC)
        except wire.WireError as e:
            verdicts.append((e.reason, e.detail))
            continue
        own, episodes = own_streams(actor, NUM_ENVS), header["episodes"]
        if not all(s in own for s in td["stream_id"].tolist()):
            verdicts.append(("foreign_streams", f"actor {actor} sent records of streams outside {own}"))
            continue
        if episode_problems(episodes, SPEC):
            verdicts.append(("bad_values", "; ".join(episode_problems(episodes, SPEC))))
            continue
        if not all(e["stream_id"] in own for e in episodes):
            verdicts.append(("foreign_streams", f"actor {actor} sent episodes of streams outside {own}"))
            continue
        if sorted(map(str, episodes)) != sorted(map(str, episodes_of(td))):
            verdicts.append(("bad_values", f"the chunk's {len(episodes)} episodes (stream, length) are not the "
                                           f"{len(episodes_of(td))} its records end"))
            continue
        replay.ingest(td, checked=True)
        verdicts.append(None)
    return verdicts


def together(chunks, replay):
    received = []
    for actor, frames in chunks:
        header, arrays = wire.open_chunk(frames, SPEC)
        received.append(Received(None, actor, header["n"], arrays, header["episodes"]))
    verdicts = check_chunks(received, SPEC, NUM_ENVS)
    replay.ingest_arrays([c.arrays for c, v in zip(received, verdicts) if v is None])
    return verdicts


@pytest.mark.parametrize("capacity", [1000, 44])  # 44: writes wrap around the ring, mid-burst too
def test_a_burst_is_stored_exactly_as_its_chunks_one_by_one(capacity):
    chunks = burst()
    ref = make_replay_buffer(ReplayConfig(capacity=capacity), SPEC, seq_len=3)
    new = make_replay_buffer(ReplayConfig(capacity=capacity), SPEC, seq_len=3)
    verdicts = one_by_one(chunks, ref)
    assert [v and v[0] for v in verdicts] == [None] * 2 + ["foreign_streams", None, "bad_values"] + \
        [None] * 3 + ["foreign_streams", None, "bad_values", "bad_values"]  # the premise: five bad chunks
    #                                    (three for their episodes), one ungrouped good one
    assert sum(int((wire.open_chunk(f, SPEC)[1]["done"] != ALIVE).sum()) for _, f in chunks) > 5  # and end
    #                                    episodes
    assert together(chunks, new) == verdicts  # reasons and details
    assert len(new) == len(ref)
    s_new, s_ref = new.sampler.state_dict(), ref.sampler.state_dict()  # the window index, whole
    assert s_new["written"] == s_ref["written"] and s_new["streams"] == s_ref["streams"]
    assert torch.equal(s_new["valid"], s_ref["valid"]) and torch.equal(s_new["next"], s_ref["next"])
    stored_new, stored_ref = new.storage[:], ref.storage[:]
    for key in SPEC.fields():
        assert torch.equal(stored_new[key], stored_ref[key]), key
    assert (new.num_windows, new.num_streams) == (ref.num_windows, ref.num_streams)
    assert torch.equal(new.sampler.starts(), ref.sampler.starts())
    a, b = new.sample(16), ref.sample(16)  # same generator seed: the same windows
    for key in SPEC.fields():
        assert torch.equal(a[key], b[key]), key


def test_bursts_of_any_split_store_the_same_rows():
    """However the socket splits the chunks into bursts, the stored rows and windows agree."""
    chunks = burst()
    whole = make_replay_buffer(ReplayConfig(capacity=60), SPEC, seq_len=3)
    pieces = make_replay_buffer(ReplayConfig(capacity=60), SPEC, seq_len=3)
    together(chunks, whole)
    for cut in ((0, 1), (1, 5), (5, 6), (6, 12)):
        together(chunks[slice(*cut)], pieces)
    for key in SPEC.fields():
        assert torch.equal(whole.storage[:][key], pieces.storage[:][key]), key
    assert torch.equal(whole.sampler.starts(), pieces.sampler.starts())


def test_a_chunk_the_replay_cannot_hold_writes_nothing():
    chunks = burst()[:3]
    replay = make_replay_buffer(ReplayConfig(capacity=12), SPEC)
    arrays = [wire.open_chunk(frames, SPEC)[1] for _, frames in chunks]
    big = {k: np.concatenate([v] * 2) for k, v in arrays[0].items()}  # 16 records > 12
    with pytest.raises(ValueError, match="larger than the replay capacity"):
        replay.ingest_arrays([arrays[0], big])
    assert len(replay) == 0


def test_the_episodes_of_a_chunk_must_be_the_ones_its_records_end():
    streams = Streams([0, 1], seed=3)
    td = streams.chunk()
    while not (td["done"] != ALIVE).any():
        td = streams.chunk()
    ended = episodes_of(td)

    def verdict(episodes):
        header, arrays = wire.open_chunk(wire.encode_chunk(td, 0, TOKEN, 0, episodes=episodes), SPEC)
        return check_chunks([Received(None, 0, header["n"], arrays, header["episodes"])], SPEC, NUM_ENVS)[0]

    assert verdict(ended) is None
    assert verdict(list(reversed(ended))) is None  # in any order
    n = len(ended)
    for lie in ([], ended[1:], ended + [ended[0]], [{**ended[0], "length": ended[0]["length"] + 1}, *ended[1:]],
                [{**ended[0], "stream_id": 1 - ended[0]["stream_id"]}, *ended[1:]]):
        assert verdict(lie) == ("bad_values", f"the chunk's {len(lie)} episodes (stream, length) are not the "
                                              f"{n} its records end"), lie
