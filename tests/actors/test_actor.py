"""The real actor (connect + Actor, in a thread, over TCP) against a learner the test plays.

The test's learner uses the learner's own sockets (``learner_sockets``) and wire format,
and says whatever a test needs: garbage, weights for another model, NaN weights, an
impostor's version 10**9, silence, a restart as a new incarnation, a refusal. Every
wait is bounded; the actor is told to stop (and joined) at the end of each test.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time

import pytest
import torch

from mouse.acting import acting_state
import zmq

import actors.join
from actors.actor import Actor
from actors.join import ActorRefused, LearnerStopping, connect
from mouse import wire
from mouse.components import build_model
from mouse.config import ActorConfig, EnvConfig, RunConfig, to_dict
from mouse.envs import describe_env
from mouse.models import ModelConfig
from mouse.records import continuity_problems
from mouse.status import read_status
from mouse.transport import SubscriptionGuard, free_port_base, learner_sockets

pytestmark = pytest.mark.timeout(120)

NUM_ENVS, CHUNK_STEPS, CREDITS, HEARTBEAT_S = 2, 4, 3, 0.2
WAIT_S = 20.0  # upper bound on anything the test expects to happen
CFG = RunConfig(env=EnvConfig(num_envs=NUM_ENVS), num_actors=1,
                actor=ActorConfig(chunk_steps=CHUNK_STEPS, heartbeat_s=HEARTBEAT_S),
                model=ModelConfig(hidden_dim=16, num_layers=1, num_attention_heads=2))
INFO = describe_env(CFG.env)
SPEC = INFO.spec


def weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return acting_state(build_model(CFG, INFO))  # what a learner publishes: no target heads


def wait_until(cond, what: str, timeout_s: float = WAIT_S, step=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        (step or (lambda: time.sleep(0.01)))()


class FakeLearner:
    """Answers like a learner (welcome + weights, acks, "rejoin" to unknown tokens) unless told
    otherwise; keeps every chunk, hello and heartbeat it got. Like a learner it takes its
    session's chunks in seq order only (``received``); ``lose`` chunks are lost on the way."""

    def __init__(self, port: int, incarnation: str, version: int, state: dict, cfg: RunConfig = CFG):
        for _ in range(100):  # a learner that just closed frees its ports in a moment
            try:
                self.pull, self.router, self.pub = learner_sockets(zmq.Context.instance(), f"tcp://127.0.0.1:{port}")
                break
            except ValueError:
                time.sleep(0.05)
        self.cfg = cfg
        self.subscriptions = SubscriptionGuard(self.pub)
        self.incarnation, self.version = incarnation, version
        self.frames = wire.encode_weights(version, state, incarnation=incarnation)
        self.token = incarnation * 2  # a session token (32 hex digits) for its one actor
        self.granted, self.route = 0, None
        self.received = 0  # its session's chunks taken, in seq order
        self.lose = 0  # the next this many chunks are lost on the way (as a reset connection loses them)
        self.chunks: list[tuple[dict, object]] = []
        self.taken: list[object] = []  # the records of the chunks taken
        self.episodes: list[dict] = []  # the episodes of the chunks taken
        self.hellos, self.heartbeats = [], []
        self.silent = False  # receive everything, answer nothing
        self.refuse: str | None = None  # answer hellos with a refusal
        self.stopping = False  # answer hellos as a stopping learner does
        self.lose_weights = False  # the weights after a welcome are lost on the way

    def pump(self, seconds: float = 0.05) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.subscriptions.poll()
            while self.router.poll(0):
                route, *frames = self.router.recv_multipart()
                self._control(route, *wire.decode_control(frames))
            while self.pull.poll(0):
                msg = wire.decode(self.pull.recv_multipart(), SPEC.unbounded())
                if msg.kind == "chunk" and self.lose:
                    self.lose -= 1
                elif msg.kind == "chunk":
                    self.chunks.append((msg.body, msg.records))
                    if msg.body["token"] == self.token and msg.body["seq"] == self.received:
                        self.received += 1
                        self.taken.append(msg.records)
                        self.episodes += msg.body["episodes"]
                        self.granted += 1  # stored: its credit comes back (with the next word, if silent)
                        if not self.silent:
                            self.ack()
            time.sleep(0.005)

    def _control(self, route: bytes, kind: str, body: dict) -> None:
        self.route = route
        (self.hellos if kind == "hello" else self.heartbeats).append(body)
        if self.silent or kind == "bye":
            return
        if kind == "hello" and (self.refuse or self.stopping):
            self.reply("stop", {"version": self.version, "reason": self.refuse or "the learner is stopping",
                                "refused": bool(self.refuse), "received": 0})
        elif kind == "hello":
            self.granted = max(self.granted, CREDITS)
            self.reply("welcome", {"actor_id": max(body["actor_id"], 0), "token": self.token,
                                   "config": to_dict(self.cfg), "credits": self.granted})
            if self.lose_weights:
                self.stopping = True  # and the learner stops: it answers every hello "stop"
            else:
                self.send(self.frames)
        elif body["token"] != self.token:
            self.reply("rejoin", {"reason": "no session here"})
        else:
            self.ack()

    def ack(self) -> None:
        self.reply("ack", {"version": self.version, "credits": self.granted, "received": self.received})

    def reply(self, kind: str, body: dict) -> None:
        self.send(wire.encode_control(kind, {**body, "incarnation": self.incarnation}))

    def send(self, frames) -> None:
        self.router.send_multipart([self.route, *frames])

    def close(self) -> None:
        for s in (self.pull, self.router, self.pub):
            s.close(0)


class ActorThread:
    """connect + Actor.run in a thread, as `mouse actor` does in a process."""

    def __init__(self, port: int, tmp_path, actor_id: int = 0):
        self.status_path = tmp_path / "actor.status.json"
        self.actor: Actor | None = None
        self.result: object = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(port, actor_id), daemon=True)
        self.thread.start()

    def _run(self, port: int, actor_id: int) -> None:
        try:
            cfg, aid, sockets, w, welcome = connect(f"tcp://127.0.0.1:{port}", actor_id, stop=self.stopped.is_set)
            self.actor = Actor(cfg, aid, sockets, w, welcome, status_path=self.status_path)
            self.result = self.actor.run()
        except BaseException as e:
            self.result = e

    def status(self) -> dict:
        return read_status(self.status_path) or {}

    def stop(self, learner: FakeLearner | None = None) -> None:
        self.stopped.set()
        if self.actor is not None:
            self.actor.stop("test over")
        deadline = time.monotonic() + WAIT_S
        while self.thread.is_alive() and time.monotonic() < deadline:
            if learner is not None:
                learner.pump(0.05)  # its last chunk may wait for a credit
            self.thread.join(0.05)
        assert not self.thread.is_alive(), "actor thread did not stop"


@pytest.fixture
def port():
    return free_port_base()


INC_A, INC_B, INC_IMPOSTOR = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "eeeeeeeeeeeeeeee"


def params_equal(model, state) -> bool:
    return all(torch.equal(v, state[k]) for k, v in acting_state(model).items())


# --- 1. a bad learner side ---------------------------------------------------------------------

def test_bad_replies_and_weights_are_counted_and_ignored(port, tmp_path):
    learner = FakeLearner(port, INC_A, 1, weights(1))
    a = ActorThread(port, tmp_path)
    try:
        wait_until(lambda: len(learner.chunks) >= 2, "the first chunks", step=learner.pump)
        assert a.actor.version == 1 and params_equal(a.actor.model, weights(1))
        good = weights(2)
        wrong_keys = {**good, "extra.weight": torch.zeros(3)}
        wrong_shape = {k: (v[:1] if v.dim() else v) for k, v in good.items()}
        nan = {k: (v.clone().fill_(float("nan")) if v.is_floating_point() else v) for k, v in good.items()}
        w = wire.encode_weights
        head = wire.MAGIC + wire.WIRE_VERSION.to_bytes(2, "little")  # then the kind code
        bad_replies = [
            [b"garbage"],
            [head + b"\x09{not json"],
            wire.encode_control("ack", {"version": 1, "incarnation": INC_IMPOSTOR, "credits": 10**6,
                                        "received": 10**6}),
            wire.encode_control("welcome", {"actor_id": 5, "token": "5" * 32, "incarnation": INC_IMPOSTOR,
                                            "config": {}, "credits": 10**6}),
        ]
        bad_weights = [w(5, wrong_keys, incarnation=INC_A), w(6, wrong_shape, incarnation=INC_A),
                       w(7, nan, incarnation=INC_A), [head + b"\x02{}"]]
        for frames in bad_replies + bad_weights:
            learner.send(frames)
        learner.pub.send_multipart(w(10**9, good, incarnation=INC_IMPOSTOR))  # an impostor's broadcast
        learner.pump(1.0)
        learner.send(w(3, good, incarnation=INC_A))  # then the real learner's next weights
        wait_until(lambda: a.actor.version == 3, "the good weights", step=learner.pump)
        credits_before = a.actor.credits
        learner.pump(4 * HEARTBEAT_S)
        st = a.status()
        assert (st["bad_replies"], st["bad_weights"]) == (len(bad_replies), len(bad_weights)), st
        assert params_equal(a.actor.model, good)  # never half-loaded, never the impostor's
        assert a.actor.credits <= CREDITS and credits_before <= CREDITS  # the forged ack gave nothing
        n = len(learner.chunks)
        wait_until(lambda: len(learner.chunks) > n + 2, "more chunks", step=learner.pump)  # it kept acting
        assert all(h["token"] == learner.token for h, _ in learner.chunks)
    finally:
        a.stop(learner)
        learner.close()
    assert isinstance(a.result, dict), a.result


# --- 2. a connection that loses chunks ----------------------------------------------------------

def test_lost_chunks_are_sent_again_and_a_clean_stop_waits_until_all_are_taken(port, tmp_path):
    learner = FakeLearner(port, INC_A, 1, weights(1))
    a = ActorThread(port, tmp_path)
    try:
        wait_until(lambda: learner.received >= 2, "the first chunks", step=learner.pump)
        learner.lose = 1  # the next chunk is lost: what follows it is not taken (out of order)
        n = learner.received
        wait_until(lambda: learner.received >= n + CREDITS + 2, "chunks past the lost one", step=learner.pump)
        wait_until(lambda: a.status().get("chunks_resent", 0) >= 1, "the status file", step=learner.pump)
        learner.lose = 1  # and the last one, on the way out
    finally:
        a.stop(learner)
    sent = a.actor.counters["chunks_sent"]
    learner.pump(0.2)
    learner.close()
    assert isinstance(a.result, dict), a.result
    # a clean stop lost nothing: every chunk sent was taken, once, in order
    assert learner.received == sent and a.actor.unacked == collections.deque()
    records = torch.cat(learner.taken)
    assert continuity_problems(records) == []
    assert len(records) == a.actor.stepper.env_steps + NUM_ENVS  # every step, plus the reset records
    assert a.actor.counters["chunks_dropped"] == 0
    # every episode finished, once: one per record that ends one, with that stream's id and length
    ended = records["done"] != 0
    assert len(learner.episodes) == a.actor.counters["episodes"] == int(ended.sum()) > 0
    assert sorted((e["stream_id"], e["length"]) for e in learner.episodes) == sorted(
        zip(records["stream_id"][ended].tolist(), records["time"][ended].tolist()))


# --- 3. a learner that restarts ---------------------------------------------------------------

def test_a_restarted_learner_is_joined_again_with_the_same_id_and_streams(port, tmp_path):
    first = FakeLearner(port, INC_A, 50, weights(1))
    a = ActorThread(port, tmp_path)
    try:
        wait_until(lambda: len(first.chunks) >= 3, "chunks to the first learner", step=first.pump)
        assert a.actor.version == 50
        first.silent = True  # (it stops acking, and gets every chunk the actor still had credit for)
        first.pump(1.0)
        first.close()  # killed: a new process binds the same address with a lower version
        second = FakeLearner(port, INC_B, 7, weights(2))
        wait_until(lambda: any(h["token"] == second.token for h, _ in second.chunks),
                   "chunks of the new session", step=second.pump)
        hello = second.hellos[0]
        assert (hello["actor_id"], hello["token"], hello["version"]) == (0, first.token, 50)
        # the weights follow the welcome: a chunk made before they arrive may go first
        wait_until(lambda: a.actor.version == 7, "the new learner's weights", step=second.pump)
        assert params_equal(a.actor.model, weights(2))  # lower, but new
        wait_until(lambda: a.status().get("incarnation") == INC_B, "the status file", step=second.pump)
        st = a.status()
        assert st["rejoins"] >= 1 and not st["rejoining"] and st["version"] == 7
        # its streams went on: every record either learner got continues the one before it (none
        # was lost here: the first learner took all the actor had credit for before it died)
        records = [td for _, td in first.chunks + second.chunks]
        assert {int(s) for td in records for s in td["stream_id"]} == {0, 1}
        assert continuity_problems(torch.cat(records)) == []
    finally:
        a.stop(second)
        second.close()
    assert isinstance(a.result, dict), a.result


def test_a_silent_learner_is_waited_for_with_bounded_sends_then_greeted_again(port, tmp_path):
    learner = FakeLearner(port, INC_A, 1, weights(1))
    a = ActorThread(port, tmp_path)
    try:
        wait_until(lambda: len(learner.chunks) >= 2, "the first chunks", step=learner.pump)
        learner.silent = True  # alive, reading, answering nothing
        sent = len(learner.chunks)
        wait_until(lambda: any(h["token"] == learner.token for h in learner.hellos),
                   "a hello with its token", step=learner.pump)
        learner.pump(4 * HEARTBEAT_S)
        assert len(learner.chunks) - sent <= CREDITS  # no credits, no records: memory stays bounded
        assert a.status()["rejoining"]
        learner.silent = False
        wait_until(lambda: not a.status().get("rejoining", True), "the session to go on", step=learner.pump)
        n = len(learner.chunks)
        wait_until(lambda: len(learner.chunks) > n, "chunks again", step=learner.pump)
        assert all(h["token"] == learner.token for h, _ in learner.chunks)  # the same session throughout
    finally:
        a.stop(learner)
        learner.close()
    assert isinstance(a.result, dict), a.result


def test_an_actor_started_first_says_hello_once_the_learner_is_up_and_only_once(port, tmp_path, monkeypatch):
    """Its hellos to a learner not up yet are dropped; it says hello again as soon as the
    connection comes up, not when its hello timer runs out (made longer than the test here), and
    it is joined once the weights follow the welcome, with no second hello."""
    monkeypatch.setattr(actors.join, "HELLO_EVERY_S", 10 * WAIT_S)
    a = ActorThread(port, tmp_path)
    time.sleep(0.5)  # its first hello goes nowhere
    learner = FakeLearner(port, INC_A, 1, weights(1))
    try:
        wait_until(lambda: a.actor is not None, "the actor to join", step=learner.pump)
        wait_until(lambda: len(learner.chunks) >= 1, "the first chunk", step=learner.pump)
        assert len(learner.hellos) == 1, learner.hellos
    finally:
        a.stop(learner)
        learner.close()
    assert isinstance(a.result, dict), a.result


def test_an_optional_deadline_ends_the_wait(port, tmp_path):
    cfg = dataclasses.replace(CFG, actor=dataclasses.replace(CFG.actor, learner_timeout_s=1.0))
    learner = FakeLearner(port, INC_A, 1, weights(1), cfg)
    a = ActorThread(port, tmp_path)
    try:
        wait_until(lambda: len(learner.chunks) >= 1, "the first chunk", step=learner.pump)
        learner.silent = True
        wait_until(lambda: not a.thread.is_alive(), "the deadline", step=learner.pump)
    finally:
        a.stop(learner)
        learner.close()
    assert a.status()["stop_reason"] == "no word from the learner for 1s"


# --- 4. refusals --------------------------------------------------------------------------------

def join_ends(learner: FakeLearner, port: int, tmp_path, what: str):
    """An actor's join that ``learner`` ends: what it raised."""
    a = ActorThread(port, tmp_path)
    try:
        wait_until(lambda: not a.thread.is_alive(), what, step=learner.pump)
    finally:
        a.stop(learner)
        learner.close()
    return a.result


def test_a_refused_actor_raises_with_the_learners_reason(port, tmp_path):
    learner = FakeLearner(port, INC_A, 1, weights(1))
    learner.refuse = "actor id 0 is in use by node-a:1; give every actor its own --actor-id or let the " \
                     "learner assign one"
    result = join_ends(learner, port, tmp_path, "the refusal")
    assert isinstance(result, ActorRefused), result
    assert "actor id 0 is in use by node-a:1" in str(result)


@pytest.mark.parametrize("when", ["before the hello", "after the welcome, its weights lost"])
def test_a_stopping_learner_takes_no_new_actor(port, tmp_path, when):
    learner = FakeLearner(port, INC_A, 1, weights(1))
    learner.stopping, learner.lose_weights = when == "before the hello", when != "before the hello"
    result = join_ends(learner, port, tmp_path, "the answer")
    assert isinstance(result, LearnerStopping), result
    assert str(result) == f"the learner at tcp://127.0.0.1:{port} is stopping: it takes no new actor"
