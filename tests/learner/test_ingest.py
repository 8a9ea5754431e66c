"""The learner's ingest thread over real ZeroMQ sockets: hello/welcome, credits, heartbeats,
episode stats and rejections, with a real replay buffer behind it.

The test plays the actor with the sockets an actor uses (``actor_sockets``: PUSH for records,
DEALER for control) and every receive is a bounded poll, so a failing test never hangs.
"""

from __future__ import annotations

import math
import struct
import threading
import time
from dataclasses import dataclass, field
from functools import partial

import pytest
import torch
import zmq

from mouse import wire
from learner.ingest import IngestServer
from mouse.records import RecordSpec, StreamRecorder
from mouse.replay import ReplayConfig, make_replay_buffer
from mouse.transport import actor_sockets, free_port_base, learner_sockets

pytestmark = pytest.mark.timeout(60)

SPEC = RecordSpec("continuous", (3,), 2)
VERSION = 5  # the learner's current policy version
RECORD_VERSION = 3  # the policy version actors stamp on their records (lag 2)
WEIGHTS = {"w": torch.arange(6.0).reshape(2, 3), "steps": torch.tensor([7, 8], dtype=torch.int64)}
CONFIG = {"env": {"env_id": "CartPole-v1"}, "num_actors": 2}
CREDITS = 2
CAPACITY = 64
STREAMS = (10, 11)
STEPS_PER_CHUNK = 4
CHUNK_RECORDS = len(STREAMS) * STEPS_PER_CHUNK  # 8
WAIT_S = 5.0  # upper bound on anything the test expects to happen
QUIET_S = 0.3  # how long "nothing arrives" is watched


# --- records ------------------------------------------------------------------------------

class Streams:
    """An actor's vector env stand-in: each chunk continues the previous one's streams."""

    def __init__(self, stream_ids=STREAMS, seed: int = 0):
        self.g = torch.Generator().manual_seed(seed)
        self.n = len(stream_ids)
        self.recorder = StreamRecorder(SPEC, list(stream_ids))
        self.last = self.recorder.reset(self._obs(), RECORD_VERSION)
        self.pending = [self.last]

    def _obs(self):
        return torch.randn(self.n, *SPEC.obs_shape, generator=self.g)

    def chunk(self, steps: int = STEPS_PER_CHUNK):
        """``steps`` steps of every stream, stream-major like an actor's chunk: [steps * streams]."""
        pending, self.pending = self.pending, []
        while len(pending) < steps:
            action = torch.randint(0, SPEC.num_actions, (self.n,), generator=self.g)
            reward = torch.randn(self.n, generator=self.g)
            ended = torch.zeros(self.n, dtype=torch.bool)
            pending.append(self.recorder.step(action, self._obs(), reward, ended, ended, RECORD_VERSION))
        return torch.stack(pending, dim=1).reshape(-1)


def valid_chunk(actor_id: int, streams: Streams | None = None, steps: int = STEPS_PER_CHUNK) -> list:
    td = (streams or Streams()).chunk(steps)
    return wire.encode_chunk(td, actor_id, spec=SPEC)  # spec: checked valid before it leaves


def nan_reward_chunk(actor_id: int) -> list:
    td = Streams().chunk()
    td["reward"][-1] = math.nan  # a record with time > 0: only the NaN is wrong
    with pytest.raises(ValueError):
        wire.encode_chunk(td, actor_id, spec=SPEC)  # the test's own premise: these records are bad
    return wire.encode_chunk(td, actor_id)


# --- the actor side -------------------------------------------------------------------------

@dataclass
class FakeActor:
    push: zmq.Socket
    dealer: zmq.Socket
    pid: int
    host: str = "node-a"

    def control(self, kind: str, body: dict) -> None:
        self.dealer.send_multipart(wire.encode_control(kind, body))

    def hello(self, actor_id: int = -1) -> None:
        self.control("hello", {"actor_id": actor_id, "pid": self.pid, "host": self.host})

    def heartbeat(self, actor_id: int, counters=None) -> None:
        self.control("heartbeat", {"actor_id": actor_id, "counters": counters or {"env_steps": 0}})

    def recv(self, timeout_s: float = WAIT_S):
        """The next reply's frames, or None after ``timeout_s``."""
        if not self.dealer.poll(int(timeout_s * 1000)):
            return None
        return self.dealer.recv_multipart(copy=False)

    def expect_control(self, timeout_s: float = WAIT_S) -> tuple[str, dict]:
        frames = self.recv(timeout_s)
        assert frames is not None, f"no reply within {timeout_s}s"
        assert not wire.is_weights(frames), "expected a control reply, got weights"
        return wire.decode_control(frames)

    def expect_weights(self, timeout_s: float = WAIT_S):
        frames = self.recv(timeout_s)
        assert frames is not None, f"no weights within {timeout_s}s"
        assert wire.is_weights(frames), f"expected weights, got {wire.decode_control(frames)}"
        return wire.decode_weights(frames)

    def expect_nothing(self, timeout_s: float = QUIET_S) -> None:
        frames = self.recv(timeout_s)
        if frames is not None:
            what = "weights" if wire.is_weights(frames) else wire.decode_control(frames)
            pytest.fail(f"unexpected reply: {what}")

    def join(self, actor_id: int = -1) -> int:
        """hello -> welcome + weights; returns the assigned id."""
        self.hello(actor_id)
        kind, body = self.expect_control()
        assert kind == "welcome"
        self.expect_weights()
        return body["actor_id"]


@dataclass
class Rig:
    server: IngestServer
    replay: object
    allow: threading.Event  # the server's may_receive
    new_actor: object  # (pid=..., host=...) -> FakeActor
    actors: list = field(default_factory=list)

    def rejected(self) -> dict:
        with self.server.lock:
            return dict(self.server.rejected)


def wait_until(cond, timeout_s: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.005)


def bind_learner(ctx: zmq.Context):
    for _ in range(5):  # a port free a moment ago may be taken by the time we bind
        port = free_port_base()
        try:
            return port, learner_sockets(ctx, f"tcp://127.0.0.1:{port}")
        except ValueError:
            continue
    raise RuntimeError("could not bind the learner's sockets")


@pytest.fixture
def rig():
    ctx = zmq.Context()
    port, (pull, router, pub) = bind_learner(ctx)
    replay = make_replay_buffer(ReplayConfig(capacity=CAPACITY), SPEC, seq_len=4)
    allow = threading.Event()
    allow.set()
    server = IngestServer(
        pull, router, SPEC, partial(replay.ingest, checked=True),
        current_version=lambda: VERSION, current_weights=lambda: wire.encode_weights(VERSION, WEIGHTS),
        config=CONFIG, credits=CREDITS, may_receive=allow.is_set)
    sockets = [pull, router, pub]

    def new_actor(pid: int = 1000, host: str = "node-a") -> FakeActor:
        push, dealer, sub = actor_sockets(ctx, f"tcp://127.0.0.1:{port}")
        sockets.extend((push, dealer, sub))
        for s in (push, dealer):
            # DEALER has IMMEDIATE: a send blocks until the connection is up (bounded here)
            s.setsockopt(zmq.SNDTIMEO, int(WAIT_S * 1000))
        return FakeActor(push, dealer, pid, host)

    server.start()
    try:
        yield Rig(server, replay, allow, new_actor)
    finally:
        server.stop()
        server.join(5)
        alive = server.is_alive()
        if not alive:  # never close sockets under a thread still using them
            for s in sockets:
                s.close(0)
            ctx.term()
    assert not alive, "ingest thread did not stop"
    assert server.error is None, f"ingest thread failed: {server.error!r}"


# --- 1. hello / welcome ---------------------------------------------------------------------

def test_hello_assigns_ids_and_answers_with_config_credits_and_weights(rig):
    a = rig.new_actor(pid=1000)
    a.hello(-1)
    kind, body = a.expect_control()
    assert (kind, body) == ("welcome", {"actor_id": 0, "config": CONFIG, "credits": CREDITS})
    version, tensors = a.expect_weights()
    assert version == VERSION and list(tensors) == list(WEIGHTS)
    for k, t in WEIGHTS.items():
        assert tensors[k].dtype == t.dtype and torch.equal(tensors[k], t), k
    a.expect_nothing()
    st = rig.server.actors[0]
    assert (st.host, st.pid, st.owed) == ("node-a", 1000, 0)

    # a repeated hello (the actor resends until answered) keeps its id
    a.hello(-1)
    assert a.expect_control() == ("welcome", {"actor_id": 0, "config": CONFIG, "credits": CREDITS})
    assert a.expect_weights()[0] == VERSION

    # another process gets the next id
    b = rig.new_actor(pid=1001)
    b.hello(-1)
    assert b.expect_control() == ("welcome", {"actor_id": 1, "config": CONFIG, "credits": CREDITS})
    assert b.expect_weights()[0] == VERSION
    b.expect_nothing()
    a.expect_nothing()  # b's welcome went to b only
    assert sorted(rig.server.actors) == [0, 1]
    assert rig.server.actors[0].identity != rig.server.actors[1].identity


# --- 2. chunks and credits ------------------------------------------------------------------

def test_valid_chunk_is_stored_and_earns_one_credit(rig):
    a = rig.new_actor()
    assert a.join() == 0
    a.push.send_multipart(valid_chunk(0))
    assert a.expect_control() == ("ack", {"version": VERSION, "credits": 1})
    a.expect_nothing()  # exactly one credit per stored chunk
    s = rig.server
    assert (s.chunks, s.steps, len(rig.replay)) == (1, CHUNK_RECORDS, CHUNK_RECORDS)
    assert s.streams_seen == set(STREAMS)
    assert (s.actors[0].steps, s.actors[0].version, s.actors[0].owed) == (CHUNK_RECORDS, RECORD_VERSION, 0)
    assert s.take_policy_lag() == VERSION - RECORD_VERSION
    assert s.take_policy_lag() is None  # taken
    assert rig.rejected() == {}


def test_throttled_learner_stores_chunks_but_owes_their_credits(rig):
    a = rig.new_actor()
    assert a.join() == 0
    rig.allow.clear()  # training lags the replay ratio
    streams = Streams()
    for _ in range(CREDITS):
        a.push.send_multipart(valid_chunk(0, streams))
    wait_until(lambda: rig.server.steps == CREDITS * CHUNK_RECORDS, what="both chunks stored")
    assert len(rig.replay) == CREDITS * CHUNK_RECORDS
    a.expect_nothing()  # no credit while throttled
    assert rig.server.actors[0].owed == CREDITS

    # a throttled actor's heartbeat is answered, but with no credits
    a.heartbeat(0)
    assert a.expect_control() == ("ack", {"version": VERSION, "credits": 0})
    a.expect_nothing()

    rig.allow.set()  # training caught up: the owed credits are paid
    paid = 0
    while paid < CREDITS:
        kind, body = a.expect_control()
        assert kind == "ack" and body["version"] == VERSION and body["credits"] >= 1
        paid += body["credits"]
    assert paid == CREDITS
    a.expect_nothing()
    assert rig.server.actors[0].owed == 0


# --- 4. rejected chunks ---------------------------------------------------------------------

def test_bad_values_chunk_is_rejected_and_still_returns_its_credit(rig):
    a = rig.new_actor()
    assert a.join() == 0
    a.push.send_multipart(nan_reward_chunk(0))
    assert a.expect_control() == ("ack", {"version": VERSION, "credits": 1})
    a.expect_nothing()
    assert rig.rejected() == {"bad_values": 1}
    s = rig.server
    assert (s.chunks, s.steps, len(rig.replay), s.streams_seen) == (0, 0, 0, set())

    # the same from an actor the learner never heard of: counted, nobody to answer, no crash
    a.push.send_multipart(nan_reward_chunk(7))
    wait_until(lambda: rig.rejected() == {"bad_values": 2}, what="second rejection")
    a.expect_nothing()
    assert 7 not in s.actors  # a refused chunk registers nobody
    assert s.is_alive() and s.error is None
    assert (s.steps, len(rig.replay)) == (0, 0)

    a.push.send_multipart(valid_chunk(0))  # the thread still ingests
    assert a.expect_control() == ("ack", {"version": VERSION, "credits": 1})
    assert (s.steps, len(rig.replay)) == (CHUNK_RECORDS, CHUNK_RECORDS)


def test_chunk_the_replay_refuses_is_counted_and_returns_its_credit(rig):
    a = rig.new_actor()
    assert a.join() == 0
    steps = CAPACITY // len(STREAMS) + 1  # valid records, but more than the buffer holds
    a.push.send_multipart(valid_chunk(0, steps=steps))
    assert a.expect_control() == ("ack", {"version": VERSION, "credits": 1})
    assert rig.rejected() == {"replay_rejected": 1}
    assert (rig.server.chunks, rig.server.steps, len(rig.replay)) == (0, 0, 0)


def test_chunk_with_wrong_fields_from_known_actor_returns_its_credit(rig):
    a = rig.new_actor()
    assert a.join() == 0
    td = Streams().chunk()
    del td["xformed_reward"]  # the header names actor 0, but not the spec's fields
    a.push.send_multipart(wire.encode_chunk(td, 0))
    wait_until(lambda: rig.rejected() == {"bad_fields": 1}, what="bad_fields rejection")
    assert a.expect_control(timeout_s=1.0) == ("ack", {"version": VERSION, "credits": 1})


# --- 5. heartbeats ---------------------------------------------------------------------------

def test_heartbeat_is_acked_until_actors_are_told_to_stop(rig):
    a = rig.new_actor()
    assert a.join() == 0
    a.heartbeat(0, {"env_steps": 12, "send_blocked_s": 0.5})
    assert a.expect_control() == ("ack", {"version": VERSION, "credits": 0})
    a.expect_nothing()
    assert rig.server.actors[0].counters == {"env_steps": 12, "send_blocked_s": 0.5}

    rig.server.stop_actors = True
    a.heartbeat(0)
    assert a.expect_control() == ("stop", {"version": VERSION})
    a.expect_nothing()


def test_heartbeat_from_an_actor_of_a_previous_learner_gets_fresh_credits(rig):
    a = rig.new_actor()
    a.heartbeat(3)  # never said hello to this learner
    assert a.expect_control() == ("ack", {"version": VERSION, "credits": 0})
    assert a.expect_control() == ("ack", {"version": VERSION, "credits": CREDITS})
    a.expect_nothing()
    a.heartbeat(3)  # only once
    assert a.expect_control() == ("ack", {"version": VERSION, "credits": 0})
    a.expect_nothing()


# --- 6. episode stats -------------------------------------------------------------------------

def test_episode_stats_are_collected(rig):
    a = rig.new_actor()
    assert a.join() == 0
    episodes = [{"stream_id": 10, "return": 21.5, "length": 21, "policy_version": 3},
                {"stream_id": 11, "return": -1.0, "length": 4, "policy_version": -1}]
    a.push.send_multipart(wire.encode_control("episode", {"actor_id": 0, "episodes": episodes}))
    got = []
    wait_until(lambda: got.extend(rig.server.take_episodes()) or len(got) >= len(episodes),
               what="episode stats")
    assert got == episodes
    assert rig.server.take_episodes() == []  # taken once
    a.expect_nothing()  # stats earn no credit
    assert rig.rejected() == {}


# --- 7. garbage ---------------------------------------------------------------------------

def _prefix(version: int, code: int) -> bytes:
    return b"MOUSE" + struct.pack("<HB", version, code)


def test_garbage_on_both_sockets_is_counted_and_ingest_goes_on(rig):
    a = rig.new_actor()
    assert a.join() == 0
    good = valid_chunk(0)

    # records socket
    a.push.send_multipart([b"garbage"])                                            # bad_magic
    a.push.send_multipart([_prefix(99, 1) + b"{}"])                                # bad_version
    a.push.send_multipart([_prefix(1, 200) + b"{}"])                               # bad_kind
    a.push.send_multipart(wire.encode_control("hello", {"actor_id": -1, "pid": 1, "host": "x"}))  # bad_kind
    a.push.send_multipart([bytes(f) for f in good[:-1]])                          # missing_frames (actor 0)
    a.push.send_multipart([*map(bytes, good), b"extra"])                          # too_many_frames (actor 0)
    # control socket
    a.dealer.send_multipart([b""])                                                 # bad_magic
    a.dealer.send_multipart([_prefix(1, 4) + b"{not json"])                        # bad_header
    a.dealer.send_multipart([_prefix(1, 4) + b'{"actor_id": 0}'])                  # bad_body
    a.dealer.send_multipart([*wire.encode_control("bye", {"actor_id": 0}), b"x"])  # too_many_frames
    a.control("ack", {"version": 1, "credits": 9})                                 # bad_kind: learner->actor
    a.dealer.send_multipart(good)                                                  # bad_kind: chunk as control

    expected = {"bad_magic": 2, "bad_version": 1, "bad_kind": 4, "missing_frames": 1,
                "too_many_frames": 2, "bad_header": 1, "bad_body": 1}
    wait_until(lambda: rig.rejected() == expected, what=f"rejections {expected}")
    # the two truncated/padded chunks named actor 0: their credits come back; nothing else answers
    paid = 0
    while paid < 2:
        kind, body = a.expect_control()
        assert kind == "ack"
        paid += body["credits"]
    assert paid == 2
    a.expect_nothing()
    s = rig.server
    assert s.is_alive() and s.error is None
    assert (s.chunks, s.steps, len(rig.replay)) == (0, 0, 0)
    assert set(s.actors) == {0}
    assert s.take_episodes() == []

    a.push.send_multipart(good)
    assert a.expect_control() == ("ack", {"version": VERSION, "credits": 1})
    assert (s.chunks, s.steps, len(rig.replay)) == (1, CHUNK_RECORDS, CHUNK_RECORDS)
    assert rig.rejected() == expected
