"""The actor's transport: send chunks with credits, take weights, follow the learner.

The stepping, acting and chunking are ``actors.stepper.Stepper``'s, the first
hello/welcome handshake ``actors.join.connect``'s; this module owns the sockets
around the stepper from then on: credit flow control,
heartbeats, weights and the learner's "stop". It works the same over
``tcp://`` (actor processes) and ``inproc://`` (actor threads of ``mouse run --inproc``).

Session. The learner's welcome gives the actor its id, a session token, the
learner's incarnation, the run config and its credits; every message the actor
sends carries the id and token. Acks carry the session's total credit grant, so a
lost ack costs nothing.

Delivery. Each chunk carries its number in the session (``seq``), and the actor keeps
it until an ack or heartbeat answer says the learner has taken it (``received``). A
reset connection loses what was in it: when the learner has answered for RESEND_BEATS
heartbeats since a chunk left without taking it, every chunk not taken goes again (the
learner takes a session's chunks in order only, and drops copies). On a clean stop the
actor waits, DRAIN_BEATS heartbeats at most, until everything it sent is taken, then
says bye: a clean stop loses nothing. A new session (a new learner) starts at seq 0;
the chunks the old one never took are dropped (``chunks_dropped``), a gap in the
streams that the replay handles.

A learner may go away and come back: a learner restarted from its checkpoint is a
new incarnation. The actor never gives up by default (``actor.learner_timeout_s``
= 0): it notices a new learner (a "rejoin" answer to its heartbeat, weights of
another incarnation) or silence (no word for SILENT_BEATS heartbeats) and says
hello again with its id and token, keeping its streams; until welcomed it sends no
records, so its memory stays bounded (its stepping waits with the chunk). A new
incarnation's welcome starts a new session: fresh credits, and the weights that
follow are taken whatever their version. It leaves on "stop", on a signal, after
the optional deadline, or when a learner refuses it (``ActorRefused``: its id is in
use, the run config changed).

Whatever answers on the learner's address cannot crash it: malformed or unexpected
replies and weights that are malformed, shaped for another model or not finite are
counted (``bad_replies``, ``bad_weights``) and ignored; it keeps acting with the
weights it has.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass

import torch
import zmq

from mouse import wire
from mouse.acting import acting_state, load_acting_state
from mouse.components import build_model
from mouse.config import RunConfig, from_dict
from mouse.envs import describe_env
from mouse.status import write_status
from mouse.transport import DRAIN_BEATS, drain_latest

from .join import ActorRefused, Welcome, hello_body, send_control
from .stepper import Stepper

log = logging.getLogger("mouse.actor")

SILENT_BEATS = 3  # heartbeats without any word from the learner before saying hello again
RESEND_BEATS = 3  # heartbeats of answers without a chunk taken before the chunks not taken go again


@dataclass
class _Unacked:
    """A chunk sent in this session that the learner has not taken yet."""

    seq: int
    frames: list
    sent_at: float  # when it last left (resends restart it)


def _same_run(a: RunConfig, b: RunConfig) -> bool:
    """Whether an actor built from ``a`` can go on acting for a learner of ``b``."""
    return (a.env, a.model, a.actor, a.acting_context, a.num_actors) == \
        (b.env, b.model, b.actor, b.acting_context, b.num_actors)


class Actor:
    """Acts in ``cfg.env`` as actor ``actor_id`` over connected ``sockets`` (see ``actors.join.connect``).

    ``stop(reason)`` may be called from outside (a signal handler, the in-process
    launcher): the actor then flushes what it holds, says bye and returns from ``run``.
    ``status_path`` (optional) is a status file kept up to date at every heartbeat.
    """

    def __init__(self, cfg: RunConfig, actor_id: int, sockets, weights, welcome: Welcome,
                 clock=time.monotonic, status_path=None):
        self.cfg, self.actor_id, self.clock, self.status_path = cfg, actor_id, clock, status_path
        self.push, self.dealer, self.sub = sockets
        self.info = describe_env(cfg.env)
        self.model = build_model(cfg, self.info).eval()
        self.layout = {k: (v.dtype, v.shape) for k, v in acting_state(self.model).items()}
        self.stepper = Stepper(cfg, actor_id, self.info, self.model)
        self.token, self.incarnation = welcome.token, welcome.incarnation
        self.granted, self.sent = welcome.credits, 0  # credits = granted - sent (this session)
        self.unacked: collections.deque[_Unacked] = collections.deque()
        self.weights_incarnation: str | None = None  # the learner process the acting weights came from
        self.past_incarnations: collections.deque = collections.deque(maxlen=8)
        self.rejoining = False  # saying hello again; no records go out meanwhile
        self.next_beat = 0.0
        self.stopping = False
        self.stop_reason: str | None = None
        self.refused: str | None = None  # set when a learner refused this actor: run() raises it
        self.counters = {"env_steps": 0, "chunks_sent": 0, "chunks_resent": 0, "chunks_dropped": 0,
                         "send_blocked_s": 0.0, "episodes": 0, "bad_replies": 0, "bad_weights": 0,
                         "rejoins": 0}
        self.last_heard = clock()  # the last valid word from the session's learner
        if weights is not None:
            self._offer_weights(weights)

    def stop(self, reason: str) -> None:
        if not self.stopping:
            self.stop_reason = reason
            self.stopping = True

    @property
    def credits(self) -> int:
        """Record chunks we may still send before the learner acks."""
        return self.granted - self.sent

    @property
    def version(self) -> int:
        return self.stepper.version

    def _write_status(self, state: str) -> None:
        write_status(self.status_path, {
            "state": state, "actor_id": self.actor_id, "version": self.version, "credits": self.credits,
            "incarnation": self.incarnation, "rejoining": self.rejoining, "stop_reason": self.stop_reason,
            **self.counters})

    def _bad(self, counter: str, what: str) -> None:
        self.counters[counter] += 1
        (log.warning if self.counters[counter] == 1 else log.debug)("actor %d ignored %s", self.actor_id, what)

    # --- weights ---------------------------------------------------------------------
    def _offer_weights(self, frames) -> None:
        """Load weights of the session's learner that are newer than ours (any version of a
        learner we just joined); anything else is ignored, and never half-loaded."""
        try:
            version, incarnation, state = wire.decode_weights(frames)
        except wire.WireError as e:
            return self._bad("bad_weights", f"malformed weights ({e})")
        if incarnation != self.incarnation:
            if incarnation not in self.past_incarnations:  # a new learner broadcasts: join it
                self._rejoin(f"weights from learner incarnation {incarnation}, not {self.incarnation}")
            return
        self.last_heard = self.clock()
        if incarnation == self.weights_incarnation and version <= self.version:
            return  # out of order or repeated: weights only move forward within one learner
        problem = self._state_problem(state)
        if problem:
            return self._bad("bad_weights", f"weights v{version}: {problem}")
        load_acting_state(self.model, state)  # in place; the learner publishes only acting_state
        self.stepper.version, self.weights_incarnation = version, incarnation

    def _state_problem(self, state: dict[str, torch.Tensor]) -> str | None:
        if state.keys() != self.layout.keys():
            odd = sorted(state.keys() ^ self.layout.keys())[:3]
            return f"not this model's tensors (e.g. {odd})"
        for name, t in state.items():
            dtype, shape = self.layout[name]
            if t.dtype != dtype or t.shape != shape:
                return f"{name} is {t.dtype} {list(t.shape)}, the model's is {dtype} {list(shape)}"
        if not all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point()):
            return "NaN or inf in the weights"
        return None

    def _take_weights(self) -> None:
        latest = drain_latest(self.sub)
        if latest is not None:
            self._offer_weights(latest)

    # --- replies -----------------------------------------------------------------------
    def _handle_replies(self) -> None:
        while self.dealer.poll(0):
            self._handle_reply(self.dealer.recv_multipart(copy=False))

    def _handle_reply(self, frames) -> None:
        if wire.is_weights(frames):
            return self._offer_weights(frames)
        try:
            kind, body = wire.decode_control(frames)
        except wire.WireError as e:
            return self._bad("bad_replies", f"a malformed reply ({e})")
        if kind == "welcome":
            return self._welcomed(body)
        if kind == "rejoin":
            return self._rejoin(f"the learner (incarnation {body['incarnation']}) has no session for us")
        if kind not in ("ack", "stop"):
            return self._bad("bad_replies", f"a {kind} message on the control socket")
        if kind == "stop" and body["refused"] and self.rejoining:
            self.refused = f"the learner refused this actor: {body['reason']}"
            log.error("actor %d: %s", self.actor_id, self.refused)
            return self.stop(self.refused)
        if body["incarnation"] != self.incarnation:
            if body["incarnation"] not in self.past_incarnations:
                self._bad("bad_replies", f"a {kind} from learner incarnation {body['incarnation']}")
            return
        self.last_heard = self.clock()
        self._taken(body["received"])
        if kind == "ack":
            self.granted = max(self.granted, body["credits"])
        elif not self.stopping:
            log.info("actor %d: the learner asked to stop", self.actor_id)
            self.stop("the learner asked to stop")

    def _welcomed(self, body: dict) -> None:
        if body["token"] == self.token and body["incarnation"] == self.incarnation:
            self.granted = max(self.granted, body["credits"])  # the same session: nothing is lost
            self.last_heard, self.rejoining = self.clock(), False
            for c in self.unacked:  # what a cut link held back may still arrive: wait afresh
                c.sent_at = self.last_heard
            return
        if not self.rejoining or body["actor_id"] != self.actor_id:
            return self._bad("bad_replies", "a welcome to another session")
        try:
            same = _same_run(self.cfg, from_dict(RunConfig, body["config"]))
        except (ValueError, TypeError):
            same = False
        if not same:
            self.refused = ("the learner's run config differs from the one this actor started with "
                            "(env, model or actor settings): restart the actor")
            log.error("actor %d: %s", self.actor_id, self.refused)
            return self.stop(self.refused)
        if body["incarnation"] != self.incarnation:
            self.past_incarnations.append(self.incarnation)
        self.token, self.incarnation = body["token"], body["incarnation"]
        self.granted, self.sent = body["credits"], 0
        self.counters["chunks_dropped"] += len(self.unacked)  # the old session's: never resent
        self.unacked.clear()
        self.last_heard, self.rejoining = self.clock(), False
        log.info("actor %d joined the learner again (incarnation %s)", self.actor_id, self.incarnation)

    def _rejoin(self, why: str) -> None:
        if self.rejoining or self.stopping:
            return
        log.warning("actor %d: %s: saying hello again", self.actor_id, why)
        self.rejoining = True
        self.counters["rejoins"] += 1
        self.next_beat = 0.0  # now

    # --- heartbeats --------------------------------------------------------------------
    def _heartbeat(self) -> None:
        """Every heartbeat_s: a heartbeat (or, while re-joining, a hello); notice silence."""
        if self.clock() < self.next_beat:
            return
        self.next_beat = self.clock() + self.cfg.actor.heartbeat_s
        self._check_silence()
        self._resend_lost()
        self.counters["env_steps"] = self.stepper.env_steps
        self._write_status("stopping" if self.stopping else "running")
        if self.rejoining:
            send_control(self.dealer, "hello", hello_body(self.actor_id, self.token, self.version))
        else:
            send_control(self.dealer, "heartbeat", {"actor_id": self.actor_id, "token": self.token,
                                                     "counters": {"version": self.version, **self.counters}})

    def _check_silence(self) -> None:
        silent, a = self.clock() - self.last_heard, self.cfg.actor
        if a.learner_timeout_s and silent > a.learner_timeout_s and not self.stopping:
            log.error("actor %d: no word from the learner for %.0fs, stopping", self.actor_id, silent)
            self.stop(f"no word from the learner for {a.learner_timeout_s:g}s")
        elif silent > SILENT_BEATS * a.heartbeat_s:
            self._rejoin(f"no word from the learner for {silent:.0f}s")

    # --- sending -----------------------------------------------------------------------
    def _taken(self, received: int) -> None:
        """The learner has taken the session's chunks up to ``received``: forget those."""
        while self.unacked and self.unacked[0].seq < received:
            self.unacked.popleft()

    def _resend_lost(self) -> None:
        """Resend every chunk not taken once the learner has answered, RESEND_BEATS heartbeats
        (one when stopping) after the oldest left, without taking it: a reset connection lost
        it, and the learner dropped whatever came after."""
        if not self.unacked or self.rejoining:
            return
        beats = 1 if self.stopping else RESEND_BEATS
        if self.last_heard - self.unacked[0].sent_at < beats * self.cfg.actor.heartbeat_s:
            return
        for c in self.unacked:
            if not self._send(c.frames):
                break
            c.sent_at = self.clock()
            self.counters["chunks_resent"] += 1

    def _wait_for_credit(self) -> None:
        """Explicit backpressure: a chunk leaves only with a credit of the current session."""
        start = self.clock()
        while (self.credits <= 0 or self.rejoining) and not self.stopping:
            if self.dealer.poll(50):
                self._handle_replies()
            self._take_weights()  # the newest weights are waiting too
            self._heartbeat()  # the learner must keep hearing from a throttled actor
        self.counters["send_blocked_s"] += self.clock() - start

    def _send(self, frames, flush_s: float = 2.0) -> bool:
        """Send without ever hanging on a gone learner: once stopping, give up after ``flush_s``."""
        start = self.clock()
        while not self.stopping or self.clock() - start < flush_s:
            try:
                self.push.send_multipart(frames, zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                self.push.poll(50, zmq.POLLOUT)
        return False

    # --- main loop -----------------------------------------------------------------------
    def run(self, max_steps: int = 0) -> dict:
        """Act until stopped (or for ``max_steps`` vector steps); returns the counters.
        Raises ``ActorRefused`` (after cleaning up) when a learner refused this actor."""
        self._write_status("running")
        try:
            self._loop(max_steps)
            if not self.refused:
                self._drain()
            send_control(self.dealer, "bye", {"actor_id": self.actor_id, "token": self.token})
        finally:
            # linger: the last chunk and the bye are only queued; let zmq deliver them
            for sock, linger_ms in ((self.push, 2000), (self.dealer, 1000), (self.sub, 0)):
                sock.close(linger_ms)
            self.stepper.close()
        self.counters["env_steps"] = self.stepper.env_steps
        if self.stop_reason is None:
            self.stop_reason = f"max_steps={max_steps} reached" if max_steps > 0 else "stopped"
        self._write_status("stopped")
        if self.refused:
            raise ActorRefused(self.refused)
        return self.counters

    def _loop(self, max_steps: int) -> None:
        stepper, steps = self.stepper, 0
        stepper.reset()
        while not self.stopping and (max_steps <= 0 or steps < max_steps):
            if self.sub.poll(0):
                self._take_weights()
            stepper.step()
            steps += 1
            if stepper.ready():
                self._handle_replies()  # credits and "stop" arrive as replies
                self._flush()
            if self.clock() >= self.next_beat:
                self._heartbeat()
                self._handle_replies()
        if not self.refused:
            self._flush()  # nothing lost on a clean stop (the learner drains while stopping)

    def _drain(self) -> None:
        """Before the bye: wait until the learner has taken every chunk sent (resending what a
        connection lost), DRAIN_BEATS heartbeats at most, and not while there is no session."""
        deadline = self.clock() + DRAIN_BEATS * self.cfg.actor.heartbeat_s
        while self.unacked and not self.rejoining and self.clock() < deadline:
            if self.dealer.poll(50):
                self._handle_replies()
                self._resend_lost()  # as soon as an answer shows a loss
            self._heartbeat()

    def _flush(self) -> None:
        chunk, episodes = self.stepper.take()  # (an episode ends at a record: no chunk, no episodes)
        if chunk is not None:
            self._wait_for_credit()
            # the episodes travel with their records: resent with them, taken once with them
            frames = wire.encode_chunk(chunk, self.actor_id, self.token, self.sent, episodes=episodes)
            if self._send(frames):  # (the chunk's tensors are fresh: they stay as sent until taken)
                self.unacked.append(_Unacked(self.sent, frames, self.clock()))
                self.counters["chunks_sent"] += 1
                self.counters["episodes"] += len(episodes)
                self.sent += 1
