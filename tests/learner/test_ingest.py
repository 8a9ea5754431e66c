"""The learner's ingest thread over real ZeroMQ sockets: hello/welcome, credits, heartbeats,
episode stats and rejections, with a real replay buffer behind it.

The test plays the actor with the sockets an actor uses (``actor_sockets``: PUSH for records,
DEALER for control) and every receive is a bounded poll, so a failing test never hangs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import threading
import time
from dataclasses import dataclass, field

import pytest
import torch
import zmq

from mouse import wire
from learner.ingest import IngestServer
from mouse.records import ALIVE, TERMINAL, RecordSpec, StreamRecorder
from mouse.replay import ReplayConfig, make_replay_buffer
from mouse.transport import actor_sockets, free_port_base, learner_sockets

pytestmark = pytest.mark.timeout(60)

SPEC = dataclasses.replace(RecordSpec("continuous", (3,), 2), max_abs_obs=1e3, max_abs_reward=10.0)
VERSION = 5  # the learner's current policy version
RECORD_VERSION = 3  # the policy version actors stamp on their records (lag 2)
INCARNATION = "00112233445566ff"
WEIGHTS = {"w": torch.arange(6.0).reshape(2, 3), "steps": torch.tensor([7, 8], dtype=torch.int64)}
CONFIG = {"env": {"env_id": "CartPole-v1"}, "num_actors": 2}
CREDITS = 2
CAPACITY = 64
NUM_ENVS = 2  # actor k owns streams 2k and 2k + 1
STEPS_PER_CHUNK = 4
CHUNK_RECORDS = NUM_ENVS * STEPS_PER_CHUNK  # 8
MAX_ACTORS = 8
WAIT_S = 5.0  # upper bound on anything the test expects to happen
QUIET_S = 0.3  # how long "nothing arrives" is watched


def streams_of(actor_id: int) -> list[int]:
    return [actor_id * NUM_ENVS + j for j in range(NUM_ENVS)]


def ack(credits: int, received: int | None = None) -> tuple[str, dict]:
    """An ack granting ``credits`` in all, for ``received`` chunks taken (default: one per
    credit past the welcome's, as when nothing is owed)."""
    received = credits - CREDITS if received is None else received
    return "ack", {"version": VERSION, "incarnation": INCARNATION, "credits": credits, "received": received}


# --- records ------------------------------------------------------------------------------

class Streams:
    """An actor's vector env stand-in: each chunk continues the previous one's streams."""

    def __init__(self, stream_ids=None, seed: int = 0):
        stream_ids = streams_of(0) if stream_ids is None else stream_ids
        self.g = torch.Generator().manual_seed(seed)
        self.n = len(stream_ids)
        self.recorder = StreamRecorder(SPEC, list(stream_ids))
        self.last = self.recorder.reset(self._obs(), RECORD_VERSION)
        self.pending = [self.last]

    def _obs(self):
        return torch.randn(self.n, *SPEC.obs_shape, generator=self.g)

    def chunk(self, steps: int = STEPS_PER_CHUNK, end: bool = False):
        """``steps`` steps of every stream, stream-major like an actor's chunk: [steps * streams];
        ``end``: every stream's episode ends at the last step."""
        pending, self.pending = self.pending, []
        while len(pending) < steps:
            action = torch.randint(0, SPEC.num_actions, (self.n,), generator=self.g)
            reward = torch.rand(self.n, generator=self.g)
            ended = torch.full((self.n,), end and len(pending) == steps - 1)
            pending.append(self.recorder.step(action, self._obs(), reward, ended, ended, RECORD_VERSION))
        return torch.stack(pending, dim=1).reshape(-1)


def valid_chunk(actor_id: int, token: str, streams: Streams | None = None, steps: int = STEPS_PER_CHUNK,
                seq: int = 0, episodes: list[dict] | None = None):
    td = (streams or Streams(streams_of(actor_id))).chunk(steps)
    # spec: checked valid before it leaves
    return wire.encode_chunk(td, actor_id, token, seq, spec=SPEC, episodes=episodes)


def nan_reward_chunk(actor_id: int, token: str, seq: int = 0) -> list:
    td = Streams(streams_of(actor_id)).chunk()
    td["reward"][-1] = math.nan  # a record with time > 0: only the NaN is wrong
    with pytest.raises(ValueError):
        wire.encode_chunk(td, actor_id, token, seq, spec=SPEC)  # the test's own premise: these records are bad
    return wire.encode_chunk(td, actor_id, token, seq)


# --- the actor side -------------------------------------------------------------------------

@dataclass
class FakeActor:
    push: zmq.Socket
    dealer: zmq.Socket
    pid: int
    host: str = "node-a"
    actor_id: int = -1
    token: str = ""  # the session token, once welcomed
    sent: int = 0  # chunks of the session so far: the next one's seq

    def next_seq(self) -> int:
        self.sent += 1
        return self.sent - 1

    def control(self, kind: str, body: dict) -> None:
        self.dealer.send_multipart(wire.encode_control(kind, body))

    def raw_control(self, kind: str, body: dict) -> None:
        """As a peer that skips encode_control's checks would send it."""
        self.dealer.send_multipart([_prefix(wire.WIRE_VERSION, wire.KIND_CODES[kind]) + json.dumps(body).encode()])

    def hello(self, actor_id: int = -1, token: str = "", version: int = -1) -> None:
        self.control("hello", {"actor_id": actor_id, "token": token, "pid": self.pid, "host": self.host,
                               "version": version})

    def heartbeat(self, counters=None, actor_id=None, token=None) -> None:
        self.control("heartbeat", {"actor_id": self.actor_id if actor_id is None else actor_id,
                                   "token": self.token if token is None else token,
                                   "counters": counters or {"env_steps": 0}})

    def chunk(self, streams: Streams | None = None, steps: int = STEPS_PER_CHUNK) -> None:
        self.push.send_multipart(valid_chunk(self.actor_id, self.token, streams, steps, self.next_seq()))

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

    def expect_credits(self, total: int) -> int:
        """Acks until one grants ``total`` credits; returns how many came. The learner acks each
        actor once per records burst, so chunks that arrive together may share one ack."""
        acks, granted = 0, -1
        while granted != total:
            kind, body = self.expect_control()
            assert kind == "ack" and granted < body["credits"] <= total, (kind, body)
            assert body == ack(body["credits"])[1]
            acks, granted = acks + 1, body["credits"]
        return acks

    def expect_nothing(self, timeout_s: float = QUIET_S) -> None:
        frames = self.recv(timeout_s)
        if frames is not None:
            what = "weights" if wire.is_weights(frames) else wire.decode_control(frames)
            pytest.fail(f"unexpected reply: {what}")

    def join(self, actor_id: int = -1) -> int:
        """hello -> welcome + weights; returns the assigned id (the session is remembered)."""
        self.hello(actor_id)
        kind, body = self.expect_control()
        assert kind == "welcome", (kind, body)
        self.expect_weights()
        self.actor_id, self.token, self.sent = body["actor_id"], body["token"], 0
        return body["actor_id"]


@dataclass
class Rig:
    server: IngestServer
    replay: object
    allow: threading.Event  # the server's may_receive
    new_actor: object  # (pid=..., host=...) -> FakeActor
    ctx: zmq.Context
    port: int
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
            return port, learner_sockets(ctx, f"tcp://127.0.0.1:{port}",
                                         records_max_bytes=wire.max_frame_bytes(SPEC, CAPACITY))
        except ValueError:
            continue
    raise RuntimeError("could not bind the learner's sockets")


@pytest.fixture
def rig():
    ctx = zmq.Context()
    port, (pull, router, pub) = bind_learner(ctx)
    replay = make_replay_buffer(ReplayConfig(capacity=CAPACITY), SPEC.unbounded(), seq_len=4)
    allow = threading.Event()
    allow.set()
    server = IngestServer(
        pull, router, SPEC, replay.ingest_arrays,
        current_version=lambda: VERSION,
        current_weights=lambda: wire.encode_weights(VERSION, WEIGHTS, incarnation=INCARNATION),
        incarnation=INCARNATION, config=CONFIG, num_envs=NUM_ENVS, max_records=CAPACITY,
        credits=CREDITS, max_actors=MAX_ACTORS, may_receive=allow.is_set)
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
        yield Rig(server, replay, allow, new_actor, ctx, port)
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

def welcome_of(actor_id: int, token: str, credits: int = CREDITS) -> dict:
    return {"actor_id": actor_id, "token": token, "incarnation": INCARNATION, "config": CONFIG,
            "credits": credits}


def test_hello_assigns_ids_and_answers_with_a_session_config_credits_and_weights(rig):
    a = rig.new_actor(pid=1000)
    a.hello(-1)
    kind, body = a.expect_control()
    assert kind == "welcome" and len(body["token"]) == wire.TOKEN_HEX
    assert body == welcome_of(0, body["token"])
    version, incarnation, tensors = a.expect_weights()
    assert (version, incarnation) == (VERSION, INCARNATION) and list(tensors) == list(WEIGHTS)
    for k, t in WEIGHTS.items():
        assert tensors[k].dtype == t.dtype and torch.equal(tensors[k], t), k
    a.expect_nothing()
    token = body["token"]

    # a repeated hello (the actor resends until answered) keeps its id and session
    a.hello(-1)
    assert a.expect_control() == ("welcome", welcome_of(0, token))
    assert a.expect_weights()[0] == VERSION

    # another process gets the next id and a session of its own
    b = rig.new_actor(pid=1001)
    b.hello(-1)
    kind, body = b.expect_control()
    assert kind == "welcome" and body["actor_id"] == 1 and body["token"] != token
    assert b.expect_weights()[0] == VERSION
    b.expect_nothing()
    a.expect_nothing()  # b's welcome went to b only
    assert sorted(rig.server.actors) == [0, 1]


# --- 2. chunks and credits ------------------------------------------------------------------

def test_valid_chunk_is_stored_and_earns_one_credit(rig):
    a = rig.new_actor()
    assert a.join() == 0
    a.chunk()
    assert a.expect_control() == ack(CREDITS + 1)  # acks carry the session's total grant
    a.expect_nothing()  # exactly one credit per stored chunk
    s = rig.server
    assert (s.chunks, s.steps, len(rig.replay)) == (1, CHUNK_RECORDS, CHUNK_RECORDS)
    assert s.streams_seen == set(streams_of(0))
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
        a.chunk(streams)
    wait_until(lambda: rig.server.steps == CREDITS * CHUNK_RECORDS, what="both chunks stored")
    assert len(rig.replay) == CREDITS * CHUNK_RECORDS
    a.expect_nothing()  # no credit while throttled
    assert rig.server.actors[0].owed == CREDITS

    # a throttled actor's heartbeat is answered, but with no new credits
    a.heartbeat()
    assert a.expect_control() == ack(CREDITS, received=CREDITS)  # both taken: never resent
    a.expect_nothing()

    rig.allow.set()  # training caught up: the owed credits are paid
    granted = CREDITS
    while granted < 2 * CREDITS:
        kind, body = a.expect_control()
        assert kind == "ack" and body["credits"] > granted
        granted = body["credits"]
    assert granted == 2 * CREDITS
    a.expect_nothing()
    assert rig.server.actors[0].owed == 0


# --- 3. rejected chunks ---------------------------------------------------------------------

def test_bad_values_chunk_is_rejected_and_still_returns_its_credit(rig):
    a = rig.new_actor()
    assert a.join() == 0
    a.push.send_multipart(nan_reward_chunk(0, a.token, a.next_seq()))
    assert a.expect_control() == ack(CREDITS + 1)
    a.expect_nothing()
    assert rig.rejected() == {"bad_values": 1}
    s = rig.server
    assert (s.chunks, s.steps, len(rig.replay), s.streams_seen) == (0, 0, 0, set())

    # the same from an actor the learner never heard of: refused before its records are read
    a.push.send_multipart(nan_reward_chunk(7, "7" * wire.TOKEN_HEX))
    wait_until(lambda: rig.rejected() == {"bad_values": 1, "bad_token": 1}, what="second rejection")
    a.expect_nothing()
    assert 7 not in s.actors  # a refused chunk registers nobody
    assert s.is_alive() and s.error is None
    assert (s.steps, len(rig.replay)) == (0, 0)

    a.chunk()  # the thread still ingests
    assert a.expect_control() == ack(CREDITS + 2)
    assert (s.steps, len(rig.replay)) == (CHUNK_RECORDS, CHUNK_RECORDS)


def test_finite_but_absurd_records_are_rejected(rig):
    """3e38 is finite: without the spec's magnitude bound it reaches the loss and poisons the weights."""
    a = rig.new_actor()
    assert a.join() == 0
    for field_name, value in (("obs_continuous", 3e38), ("reward", 1e7), ("policy_version", 2**62)):
        td = Streams().chunk()
        td[field_name][-1] = value
        a.push.send_multipart(wire.encode_chunk(td, 0, a.token, a.next_seq()))
    wait_until(lambda: rig.rejected() == {"bad_values": 3}, what="three bad_values")
    assert (rig.server.steps, len(rig.replay)) == (0, 0)


def test_chunk_the_replay_refuses_is_counted_and_returns_its_credit(rig):
    a = rig.new_actor()
    assert a.join() == 0
    steps = CAPACITY // NUM_ENVS + 1  # valid records, but more than the buffer holds
    big = Streams().chunk(steps)
    server = rig.server
    server.max_records = len(big)  # (the learner's own bound would refuse it first)
    a.push.send_multipart(wire.encode_chunk(big, 0, a.token, a.next_seq(), spec=SPEC))
    assert a.expect_control() == ack(CREDITS + 1)
    assert rig.rejected() == {"replay_rejected": 1}
    assert (server.chunks, server.steps, len(rig.replay)) == (0, 0, 0)


def test_chunk_with_wrong_fields_from_known_actor_returns_its_credit(rig):
    a = rig.new_actor()
    assert a.join() == 0
    td = Streams().chunk()
    del td["xformed_reward"]  # the header names actor 0 and its token, but not the spec's fields
    a.push.send_multipart(wire.encode_chunk(td, 0, a.token, a.next_seq()))
    wait_until(lambda: rig.rejected() == {"bad_fields": 1}, what="bad_fields rejection")
    assert a.expect_control(timeout_s=1.0) == ack(CREDITS + 1)


def test_queued_chunks_of_two_actors_are_stored_together_exactly_as_one_by_one(rig):
    """Chunks that queue up while the thread writes are checked and stored as one burst: the
    same rows, windows and rejections as ingesting them one at a time, and one ack per actor
    and burst, with the running total."""
    a, b = rig.new_actor(pid=1), rig.new_actor(pid=2)
    assert (a.join(), b.join()) == (0, 1)
    sa, sb = Streams(streams_of(0), seed=1), Streams(streams_of(1), seed=2)
    bad = sa.chunk()
    bad["reward"][-1] = math.nan  # rejected; actor 0's next chunk starts after a gap
    messages = [(a, valid_chunk(0, a.token, sa, seq=0)), (b, valid_chunk(1, b.token, sb, seq=0)),
                (a, wire.encode_chunk(bad, 0, a.token, 1)), (b, valid_chunk(1, b.token, sb, seq=1)),
                (a, valid_chunk(0, a.token, sa, seq=2)), (b, valid_chunk(1, b.token, sb, seq=2))]
    server, bursts, stored_order = rig.server, [], []
    insert = server.insert

    def spy(chunks):
        bursts.append(len(chunks))
        stored_order.extend(c["obs_continuous"].tobytes() for c in chunks)
        return insert(chunks)

    server.insert = spy
    with rig.replay.lock:  # the thread's next write waits here: the rest queue up behind it
        for actor, frames in messages:
            actor.push.send_multipart(frames)
        time.sleep(1.0)  # loopback delivers them meanwhile (a loaded CI machine may take a while)
    wait_until(lambda: server.chunks == 5 and rig.rejected() == {"bad_values": 1}, what="the burst")
    assert max(bursts) > 1 and sum(bursts) == 5  # the premise: chunks were stored together

    # one by one in the order the learner received them: PULL fair-queues between the two
    # actors' connections, so chunks of different actors may arrive in another order than sent
    ref = make_replay_buffer(ReplayConfig(capacity=CAPACITY), SPEC.unbounded(), seq_len=4)
    decoded = {td["obs_continuous"].numpy().tobytes(): td
               for td in (wire.decode_chunk(frames, SPEC)[1] for i, (_, frames) in enumerate(messages) if i != 2)}
    for key in stored_order:
        ref.ingest(decoded[key], checked=True)
    stored, expected = rig.replay.storage[:], ref.storage[:]
    for key in SPEC.fields():
        assert torch.equal(stored[key], expected[key]), key
    got, want = rig.replay.sampler.state_dict(), ref.sampler.state_dict()
    assert torch.equal(got["valid"], want["valid"]) and torch.equal(got["next"], want["next"])
    assert got["streams"] == want["streams"]
    for actor in (a, b):  # every chunk, stored or refused, earned its credit back
        assert actor.expect_credits(CREDITS + 3) <= 3
        actor.expect_nothing()
    assert (server.steps, server.streams_seen) == (5 * CHUNK_RECORDS, set(streams_of(0) + streams_of(1)))
    assert (server.actors[0].steps, server.actors[1].steps) == (2 * CHUNK_RECORDS, 3 * CHUNK_RECORDS)


def test_a_sessions_chunks_are_taken_in_seq_order_and_once(rig):
    """A chunk lost on the way leaves a gap: what follows it is dropped until the actor resends
    from the gap on; a copy of a chunk already taken is dropped. Neither is a rejection nor earns
    a credit, and the acks say how many were taken."""
    a = rig.new_actor()
    assert a.join() == 0
    streams = Streams()
    chunks = [valid_chunk(0, a.token, streams, seq=i) for i in range(3)]  # consecutive steps
    a.push.send_multipart(chunks[0])
    assert a.expect_control() == ack(CREDITS + 1)
    a.push.send_multipart(chunks[2])  # chunk 1 was lost
    wait_until(lambda: rig.server.skipped == {"out_of_order": 1}, what="an out-of-order chunk")
    a.expect_nothing()  # no credit
    a.heartbeat()
    assert a.expect_control() == ack(CREDITS + 1)  # received: 1
    for frames in chunks[1:]:  # the actor resends from the gap on
        a.push.send_multipart(frames)
    a.expect_credits(CREDITS + 3)
    a.push.send_multipart(chunks[1])  # a copy of one already taken
    wait_until(lambda: rig.server.skipped == {"out_of_order": 1, "duplicate": 1}, what="a duplicate")
    a.heartbeat()
    assert a.expect_control() == ack(CREDITS + 3)
    assert rig.rejected() == {}
    s = rig.server
    assert (s.chunks, s.steps, len(rig.replay)) == (3, 3 * CHUNK_RECORDS, 3 * CHUNK_RECORDS)
    stored = rig.replay.storage[:]
    sent = torch.cat([wire.decode_chunk(frames, SPEC)[1] for frames in chunks])
    assert torch.equal(stored["obs_continuous"], sent["obs_continuous"])  # each once, in order


# --- 4. identity: a header cannot speak for another actor ------------------------------------

def test_forged_chunks_are_dropped_and_earn_the_named_actor_nothing(rig):
    a = rig.new_actor(pid=1)
    assert a.join() == 0
    intruder = rig.new_actor(pid=2, host="elsewhere")
    forged_token = "ab" * (wire.TOKEN_HEX // 2)
    for _ in range(3):  # valid records in actor 0's own streams, without its token
        intruder.push.send_multipart(valid_chunk(0, forged_token))
    wait_until(lambda: rig.rejected() == {"bad_token": 3}, what="three bad_token")
    a.expect_nothing()  # no credits for actor 0 from someone else's chunks
    assert (rig.server.steps, len(rig.replay), rig.server.actors[0].owed) == (0, 0, 0)
    a.chunk()  # the real actor is unaffected
    assert a.expect_control() == ack(CREDITS + 1)


def test_records_of_other_streams_are_foreign_even_with_the_right_token(rig):
    a, b = rig.new_actor(pid=1), rig.new_actor(pid=2)
    assert (a.join(), b.join()) == (0, 1)
    a.push.send_multipart(valid_chunk(0, a.token, Streams(streams_of(1)), seq=0))  # actor 1's streams
    a.push.send_multipart(valid_chunk(0, a.token, Streams([0, 99]), seq=1))  # one stream far outside
    a.expect_credits(CREDITS + 2)  # out of flight: their credits come back
    a.expect_nothing()
    assert rig.rejected() == {"foreign_streams": 2}
    assert (rig.server.steps, rig.server.streams_seen) == (0, set())
    episodes = [{"stream_id": 2, "return": 1.0, "length": 1, "policy_version": 0}]  # actor 1's stream
    a.push.send_multipart(valid_chunk(0, a.token, seq=2, episodes=episodes))  # its own records
    a.expect_credits(CREDITS + 3)
    assert rig.rejected() == {"foreign_streams": 3}
    assert (rig.server.steps, rig.server.take_episodes()) == (0, [])


def test_a_hello_naming_a_live_actor_is_refused_and_takes_nothing(rig):
    a = rig.new_actor(pid=1, host="node-a")
    assert a.join(3) == 3
    b = rig.new_actor(pid=2, host="node-b")
    b.hello(3)
    kind, body = b.expect_control()
    assert kind == "stop" and body["refused"] is True
    assert body["reason"] == ("actor id 3 is in use by node-a:1; give every actor its own --actor-id "
                              "or let the learner assign one")
    b.expect_nothing()  # no welcome, no weights
    b.hello(3, token="cd" * (wire.TOKEN_HEX // 2))  # a guessed token does not help
    assert b.expect_control()[0] == "stop"
    assert rig.rejected() == {"hello_refused": 2}
    a.chunk()  # actor 3 keeps its route and its credits
    assert a.expect_control() == ack(CREDITS + 1)
    a.heartbeat()
    assert a.expect_control() == ack(CREDITS + 1)
    b.expect_nothing()


def test_an_id_out_of_range_is_refused_and_does_not_move_the_allocator(rig):
    a = rig.new_actor(pid=1)
    a.hello(MAX_ACTORS)
    kind, body = a.expect_control()
    assert kind == "stop" and body["refused"] and f"outside [0, {MAX_ACTORS})" in body["reason"]
    a.raw_control("hello", {"actor_id": 2**62, "token": "", "pid": 1, "host": "x", "version": -1})
    b = rig.new_actor(pid=2)
    assert b.join() == 0  # the next id issued is the learner's own
    wait_until(lambda: rig.rejected() == {"hello_refused": 1, "bad_body": 1}, what="rejections")
    assert set(rig.server.actors) == {0}


def test_a_repeated_hello_keeps_what_the_actor_is_owed(rig):
    a = rig.new_actor()
    assert a.join() == 0
    rig.allow.clear()
    streams = Streams()
    for _ in range(CREDITS):
        a.chunk(streams)
    wait_until(lambda: rig.server.actors[0].owed == CREDITS, what="owed credits")
    a.hello(0, token=a.token)  # e.g. the actor heard nothing for a while and says hello again
    assert a.expect_control() == ("welcome", welcome_of(0, a.token, CREDITS))
    a.expect_weights()
    rig.allow.set()
    granted = 0
    while granted < 2 * CREDITS:
        kind, body = a.expect_control()
        assert kind == "ack"
        granted = body["credits"]
    assert granted == 2 * CREDITS  # nothing it earned was lost


def test_a_reconnected_control_connection_gets_the_replies(rig):
    a = rig.new_actor()
    assert a.join() == 0
    a.chunk()
    assert a.expect_control() == ack(CREDITS + 1)
    rig.allow.clear()
    a.chunk(Streams())
    wait_until(lambda: rig.server.actors[0].owed == 1, what="an owed credit")
    a.dealer.close(0)  # the control connection drops; a new one has a new ROUTER identity
    a.dealer = rig.ctx.socket(zmq.DEALER)
    a.dealer.connect(f"tcp://127.0.0.1:{rig.port + 1}")
    a.heartbeat()  # the first message with the token moves the route
    assert a.expect_control() == ack(CREDITS + 1, received=2)
    rig.allow.set()
    assert a.expect_control() == ack(CREDITS + 2)  # what was owed arrives on the new connection
    a.dealer.close(0)


def test_heartbeats_need_the_token_and_unknown_sessions_are_told_to_hello_again(rig):
    a = rig.new_actor()
    assert a.join() == 0
    a.heartbeat(token="ef" * (wire.TOKEN_HEX // 2))
    assert a.expect_control() == ("rejoin", {"incarnation": INCARNATION, "reason": "no session for actor 0 here"})
    a.heartbeat(actor_id=5)  # an actor of a previous learner process: no session here
    assert a.expect_control()[0] == "rejoin"
    assert rig.rejected() == {"bad_token": 2}
    assert set(rig.server.actors) == {0}  # nobody was registered by a heartbeat


def test_bye_ends_the_session_and_frees_the_id(rig):
    a = rig.new_actor(pid=1)
    assert a.join(2) == 2
    a.chunk()
    assert a.expect_control() == ack(CREDITS + 1)
    a.control("bye", {"actor_id": 2, "token": a.token})
    wait_until(lambda: rig.server.connected() == 0, what="the bye")
    b = rig.new_actor(pid=2)
    assert b.join(2) == 2 and b.token != a.token
    a.chunk()  # the old session's records are refused once the id has a new session
    wait_until(lambda: rig.rejected() == {"bad_token": 1}, what="the old token refused")


def test_a_silent_actor_is_no_longer_heard_lately_while_a_talking_one_is(rig):
    """What a stopping learner waits for (``connected(within_s)``): not an actor that went silent
    (killed), still an actor that keeps talking."""
    talking, silent = rig.new_actor(pid=1), rig.new_actor(pid=2)
    ids = talking.join(), silent.join()
    for a in (talking, silent):
        a.chunk()
        assert a.expect_control()[0] == "ack"
    assert rig.server.connected(within_s=0.5) == 2
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # the silent one says nothing from now on
        talking.heartbeat()
        assert talking.expect_control()[0] == "ack"
        time.sleep(0.1)
    assert rig.server.connected(within_s=0.5) == 1
    assert rig.server.connected() == 2  # (its session is still live)
    assert ids == (0, 1)


# --- 5. heartbeats ---------------------------------------------------------------------------

def test_heartbeat_is_acked_until_actors_are_told_to_stop(rig):
    a = rig.new_actor()
    assert a.join() == 0
    a.heartbeat({"env_steps": 12, "send_blocked_s": 0.5, "version": 4})
    assert a.expect_control() == ack(CREDITS)
    a.expect_nothing()
    assert rig.server.actors[0].counters == {"env_steps": 12, "send_blocked_s": 0.5, "version": 4}
    assert rig.server.version_heard == 4

    rig.server.stop_actors = True
    stop = ("stop", {"version": VERSION, "incarnation": INCARNATION, "reason": "the learner is stopping",
                     "refused": False, "received": 0})
    assert a.expect_control() == stop  # at once, not at its next heartbeat
    a.expect_nothing()
    a.heartbeat()
    assert a.expect_control() == stop
    a.expect_nothing()


def test_a_stopping_learner_tells_actors_that_sent_nothing_and_actors_that_join_it(rig):
    """A stopping learner tells every actor at once, not at its next heartbeat, whether it has
    sent records or not; an actor saying hello to it for the first time is told too."""
    idle, streaming, ended = rig.new_actor(pid=1), rig.new_actor(pid=2), rig.new_actor(pid=3)
    for a in (idle, streaming, ended):
        a.join()
    streaming.chunk()
    assert streaming.expect_control() == ack(CREDITS + 1)
    ended.control("bye", {"actor_id": ended.actor_id, "token": ended.token})
    wait_until(lambda: rig.server.actors[ended.actor_id].ended, what="the bye")

    rig.server.stop_actors = True
    for a, received in ((idle, 0), (streaming, 1)):
        kind, body = a.expect_control()
        assert (kind, body["reason"], body["refused"], body["received"]) == \
            ("stop", "the learner is stopping", False, received)
        a.expect_nothing()
    ended.expect_nothing()  # its session is over

    # a stopping learner takes no new actor; one of its sessions that says hello again (its
    # connection was reset) gets its session back, to send what it holds, and the stop
    late = rig.new_actor(pid=4)
    late.hello()
    assert late.expect_control() == ("stop", {"version": VERSION, "incarnation": INCARNATION,
                                              "reason": "the learner is stopping", "refused": False,
                                              "received": 0})
    late.expect_nothing()
    assert 3 not in rig.server.actors
    idle.hello(idle.actor_id, idle.token)
    assert idle.expect_control() == ("welcome", welcome_of(idle.actor_id, idle.token))
    idle.expect_weights()
    assert idle.expect_control()[0] == "stop"
    idle.expect_nothing()


def test_reported_versions_raise_the_floor_within_bounds(rig):
    """A resumed learner publishes above what its actors report; a lie cannot push it to 2**53."""
    a, b = rig.new_actor(pid=1), rig.new_actor(pid=2)
    a.hello(version=70)
    kind, body = a.expect_control()
    a.expect_weights()
    a.actor_id, a.token = body["actor_id"], body["token"]
    assert rig.server.version_heard == 70
    b.hello(version=2**53)
    assert b.expect_control()[0] == "welcome"
    assert rig.server.version_heard == VERSION + 2**32
    rig.server.versions_heard_until = 0  # the window after the learner's start has passed
    a.heartbeat({"version": 10**12})
    assert a.expect_control() == ack(CREDITS)
    assert rig.server.version_heard == VERSION + 2**32


def test_heartbeat_counters_are_a_fixed_bounded_set(rig):
    a = rig.new_actor()
    assert a.join() == 0
    for counters in ({"env_steps": 10**30}, {f"key{i}": i for i in range(100)}):
        a.raw_control("heartbeat", {"actor_id": 0, "token": a.token, "counters": counters})
    wait_until(lambda: rig.rejected() == {"bad_body": 2}, what="two bad heartbeats")
    a.expect_nothing()
    assert rig.server.actors[0].counters == {}


# --- 6. episode stats -------------------------------------------------------------------------

def test_episode_stats_are_collected_and_bounded(rig):
    a = rig.new_actor()
    assert a.join() == 0
    streams = Streams()
    td = streams.chunk(end=True)  # both streams' episodes end with its last records
    assert td["time"][STEPS_PER_CHUNK - 1] == STEPS_PER_CHUNK - 1 and td["done"][-1] == TERMINAL
    episodes = [{"stream_id": 0, "return": 2.5, "length": STEPS_PER_CHUNK - 1, "policy_version": 3},
                {"stream_id": 1, "return": -1.0, "length": STEPS_PER_CHUNK - 1, "policy_version": -1}]
    chunk = wire.encode_chunk(td, 0, a.token, 0, spec=SPEC, episodes=episodes)
    a.push.send_multipart(chunk)
    assert a.expect_control() == ack(CREDITS + 1)  # one chunk, one credit
    assert rig.server.take_episodes() == episodes
    assert rig.server.take_episodes() == []  # taken once
    a.push.send_multipart(chunk)  # resent: a duplicate
    a.push.send_multipart(valid_chunk(0, a.token, streams, seq=1))
    assert a.expect_control() == ack(CREDITS + 2)
    assert rig.server.take_episodes() == []  # the resent chunk's episodes are not counted again
    assert (rig.rejected(), dict(rig.server.skipped)) == ({}, {"duplicate": 1})
    td = streams.chunk(end=True)
    ended = [{**e, "length": t} for e, t in zip(episodes, td["time"][td["done"] != ALIVE].tolist())]
    absurd = [{**ended[0], "return": 1e300}, ended[1]]  # more than max_abs_reward per step
    made_up = [{**ended[0], "length": ended[0]["length"] + 1}, ended[1]]  # not its record's length
    for seq, lie in enumerate((absurd, made_up, [], ended[:1], ended + ended[1:]), start=2):
        a.push.send_multipart(wire.encode_chunk(td, 0, a.token, seq, episodes=lie))
    a.push.send_multipart(wire.encode_chunk(td, 0, "0" * wire.TOKEN_HEX, 7, episodes=ended))
    wait_until(lambda: rig.rejected() == {"bad_values": 5, "bad_token": 1}, what="six rejections")
    assert rig.server.take_episodes() == []
    a.push.send_multipart(wire.encode_chunk(td, 0, a.token, 7, episodes=ended))
    a.expect_credits(CREDITS + 8)  # the refused ones returned their credits too
    assert rig.server.take_episodes() == ended


# --- 7. garbage ---------------------------------------------------------------------------

def _prefix(version: int, code: int) -> bytes:
    return b"MOUSE" + struct.pack("<HB", version, code)


def test_garbage_on_both_sockets_is_counted_and_ingest_goes_on(rig):
    a = rig.new_actor()
    assert a.join() == 0
    good = valid_chunk(0, a.token)
    v = wire.WIRE_VERSION

    # records socket
    a.push.send_multipart([b"garbage"])                                            # bad_magic
    a.push.send_multipart([_prefix(99, 1) + b"{}"])                                # bad_version
    a.push.send_multipart([_prefix(v, 200) + b"{}"])                               # bad_kind
    a.push.send_multipart(wire.encode_control("hello", {"actor_id": -1, "token": "", "pid": 1, "host": "x",
                                                        "version": -1}))           # bad_kind
    a.push.send_multipart([bytes(f) for f in good[:-1]])                          # missing_frames (actor 0)
    a.push.send_multipart([*map(bytes, good), b"[]", b"extra"])                   # too_many_frames (actor 0)
    # control socket
    a.dealer.send_multipart([b""])                                                 # bad_magic
    a.dealer.send_multipart([_prefix(v, 4) + b"{not json"])                        # bad_header
    a.dealer.send_multipart([_prefix(v, 4) + b'{"actor_id": 0}'])                  # bad_body
    a.dealer.send_multipart([*wire.encode_control("bye", {"actor_id": 0, "token": a.token}), b"x"])
    #                                                                                too_many_frames
    a.control("ack", {"version": 1, "incarnation": INCARNATION, "credits": 9, "received": 0})     # bad_kind: learner->actor
    a.dealer.send_multipart(good)                                                  # too_many_frames: a chunk

    expected = {"bad_magic": 2, "bad_version": 1, "bad_kind": 3, "missing_frames": 1,
                "too_many_frames": 3, "bad_header": 1, "bad_body": 1}
    wait_until(lambda: rig.rejected() == expected, what=f"rejections {expected}")
    # the truncated chunk named actor 0 with its token: its credit comes back; the padded one
    # is refused before its header is read (more frames than a chunk has), so nobody is named
    assert a.expect_control() == ack(CREDITS + 1)
    a.expect_nothing()
    s = rig.server
    assert s.is_alive() and s.error is None
    assert (s.chunks, s.steps, len(rig.replay)) == (0, 0, 0)
    assert set(s.actors) == {0}
    assert s.take_episodes() == []

    a.push.send_multipart(valid_chunk(0, a.token, seq=1))  # the truncated one was chunk 0
    assert a.expect_control() == ack(CREDITS + 2)
    assert (s.chunks, s.steps, len(rig.replay)) == (1, CHUNK_RECORDS, CHUNK_RECORDS)
    assert rig.rejected() == expected


def test_many_frame_messages_are_discarded_without_stalling_the_control_socket(rig):
    a = rig.new_actor()
    assert a.join() == 0
    flood = rig.new_actor(pid=2)
    for _ in range(3):
        flood.push.send_multipart([b""] * 100_000)  # a header frame and 99,999 more
    flood.dealer.send_multipart([b""] * 100_000)
    a.heartbeat()
    assert a.expect_control() == ack(CREDITS)  # answered while the floods are discarded
    wait_until(lambda: rig.rejected() == {"too_many_frames": 4}, timeout_s=30, what="four floods counted")
    a.chunk()
    assert a.expect_control() == ack(CREDITS + 1)
