"""The actor's transport: connect to the learner, send chunks with credits, take weights.

The stepping, acting and chunking are ``actors.stepper.Stepper``'s; this module
owns the sockets around it: the hello/welcome handshake, credit flow control,
heartbeats, weights and the learner's "stop". It works the same over
``tcp://`` (actor processes) and ``inproc://`` (actor threads of ``mouse run --inproc``).
"""

from __future__ import annotations

import logging
import os
import socket
import time

import zmq

from mouse import wire
from mouse.acting import load_acting_state
from mouse.components import build_model
from mouse.config import RunConfig, from_dict
from mouse.envs import describe_env
from mouse.keys import refusal_message
from mouse.status import write_status
from mouse.transport import HandshakeWatch, actor_sockets, drain_latest

from .stepper import Stepper

log = logging.getLogger("mouse.actor")


def _send_control(dealer: zmq.Socket, kind: str, body: dict) -> None:
    """Never blocks: with no live connection to the learner the message is dropped."""
    try:
        dealer.send_multipart(wire.encode_control(kind, body), zmq.NOBLOCK)
    except zmq.Again:
        pass


def connect(learner: str, actor_id: int = -1, stop=lambda: False, status_path=None, keys=None):
    """Say hello until the learner answers (it may start later than the actor).

    The learner's welcome carries the run's config (actors and learner build the
    model from the same one) and the actor id (assigned when ``actor_id`` < 0),
    followed at once by the current weights.
    ``status_path`` (optional) gets a status file saying the actor is connecting.
    ``keys`` (``mouse.keys.ActorKeys``): CurveZMQ, talking only to the learner whose public
    key they pin. A learner that is up but refuses the handshake (keys missing, not allowed,
    another learner's) is a ValueError with one line saying which, rather than a wait for ever.
    Returns (cfg, actor_id, sockets, weights frames, credits).
    """
    write_status(status_path, {"state": "connecting", "learner": learner, "actor_id": actor_id})
    ctx = zmq.Context.instance()
    handshakes = HandshakeWatch()
    sockets = actor_sockets(ctx, learner, keys=keys, handshakes=handshakes)
    dealer = sockets[1]
    tcp_without_keys = keys is None and learner.startswith("tcp://")
    hint = " (if it requires CurveZMQ keys, pass --keys DIR)" if tcp_without_keys else ""
    hello = {"actor_id": actor_id, "pid": os.getpid(), "host": socket.gethostname()}
    cfg, weights, credits, refused = None, None, 0, None
    start, next_warning = time.monotonic(), time.monotonic() + 5
    while not stop():
        _send_control(dealer, "hello", hello)  # dropped until the connection is up: resent below
        while dealer.poll(1000):
            frames = dealer.recv_multipart(copy=False)
            if wire.is_weights(frames):
                weights = frames
            else:
                kind, body = wire.decode_control(frames)
                if kind == "welcome":
                    cfg, actor_id = from_dict(RunConfig, body["config"]), body["actor_id"]
                    credits = body["credits"]
            if cfg is not None and weights is not None:
                handshakes.close()
                log.info("actor %d connected to %s", actor_id, learner)
                return cfg, actor_id, sockets, weights, credits
        refused = handshakes.refused()
        if refused:
            error = refusal_message(learner, refused, keys)
            write_status(status_path, {"state": "refused", "learner": learner, "error": error})
            break
        if time.monotonic() >= next_warning:
            next_warning += 10
            log.warning("no answer from the learner at %s after %.0fs, still trying%s",
                        learner, time.monotonic() - start, hint)
    handshakes.close()
    for s in sockets:
        s.close(0)
    if refused:
        raise ValueError(error)
    raise KeyboardInterrupt("stopped before the learner answered")


class Actor:
    """Acts in ``cfg.env`` as actor ``actor_id`` over connected ``sockets`` (see ``connect``).

    ``stop(reason)`` may be called from outside (a signal handler, the in-process
    launcher): the actor then flushes what it holds, says bye and returns from ``run``.
    ``status_path`` (optional) is a status file kept up to date at every heartbeat.
    """

    def __init__(self, cfg: RunConfig, actor_id: int, sockets, weights=None, credits: int = 4,
                 clock=time.monotonic, status_path=None):
        self.cfg, self.actor_id, self.clock, self.status_path = cfg, actor_id, clock, status_path
        self.push, self.dealer, self.sub = sockets
        self.info = describe_env(cfg.env)
        self.model = build_model(cfg, self.info).eval()
        self.stepper = Stepper(cfg, actor_id, self.info, self.model)
        if weights is not None:
            self._load_weights(weights)
        self.credits = credits  # record chunks we may still send before the learner acks
        self.last_heard = clock()  # any reply or weights from the learner
        self.next_beat = 0.0
        self.stopping = False
        self.stop_reason: str | None = None
        self.counters = {"env_steps": 0, "chunks_sent": 0, "send_blocked_s": 0.0, "episodes": 0}

    def stop(self, reason: str) -> None:
        if not self.stopping:
            self.stop_reason = reason
            self.stopping = True

    def _write_status(self, state: str) -> None:
        write_status(self.status_path, {
            "state": state, "actor_id": self.actor_id, "version": self.version,
            "credits": self.credits, "stop_reason": self.stop_reason, **self.counters})

    @property
    def version(self) -> int:
        return self.stepper.version

    # --- weights ---------------------------------------------------------------------
    def _load_weights(self, frames) -> None:
        """Between two vector steps: decode (one copy out of the frames), then copy in place into
        the acting model (the learner publishes exactly ``mouse.acting.acting_state``'s tensors)."""
        version, state = wire.decode_weights(frames)
        if version <= self.version:  # out of order or repeated: weights only move forward
            return
        load_acting_state(self.model, state)
        self.stepper.version = version

    def _take_weights(self) -> None:
        latest = drain_latest(self.sub)
        if latest is not None:
            self.last_heard = self.clock()
            self._load_weights(latest)

    def _handle_replies(self) -> None:
        while self.dealer.poll(0):
            self._handle_reply(self.dealer.recv_multipart(copy=False))

    def _heartbeat(self) -> None:
        if self.clock() < self.next_beat:
            return
        self.next_beat = self.clock() + self.cfg.actor.heartbeat_s
        self.counters["env_steps"] = self.stepper.env_steps
        self._write_status("stopping" if self.stopping else "running")
        _send_control(self.dealer, "heartbeat",
                      {"actor_id": self.actor_id, "counters": {"version": self.version, **self.counters}})

    def _learner_gone(self) -> bool:
        """True (and stopping) once the learner has been silent for learner_timeout_s."""
        timeout = self.cfg.actor.learner_timeout_s
        if timeout and self.clock() - self.last_heard > timeout and not self.stopping:
            log.error("actor %d: no word from the learner for %.0fs, stopping", self.actor_id, timeout)
            self.stop(f"no word from the learner for {timeout:g}s")
        return self.stopping

    def _handle_reply(self, frames) -> None:
        self.last_heard = self.clock()
        if wire.is_weights(frames):
            return self._load_weights(frames)
        kind, body = wire.decode_control(frames)
        if kind == "ack":
            self.credits += body["credits"]
        elif kind == "stop" and not self.stopping:
            log.info("actor %d: the learner asked to stop", self.actor_id)
            self.stop("the learner asked to stop")

    # --- sending -----------------------------------------------------------------------
    def _wait_for_credit(self) -> None:
        """Explicit backpressure: a chunk leaves only with a credit from the learner."""
        start = self.clock()
        while self.credits <= 0 and not self._learner_gone():
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
        """Act until stopped (or for ``max_steps`` vector steps); returns the counters."""
        self._write_status("running")
        try:
            self._loop(max_steps)
            _send_control(self.dealer, "bye", {"actor_id": self.actor_id})
        finally:
            # linger: the last chunk and the bye are only queued; let zmq deliver them
            for sock, linger_ms in ((self.push, 2000), (self.dealer, 1000), (self.sub, 0)):
                sock.close(linger_ms)
            self.stepper.close()
        self.counters["env_steps"] = self.stepper.env_steps
        if self.stop_reason is None:
            self.stop_reason = f"max_steps={max_steps} reached" if max_steps > 0 else "stopped"
        self._write_status("stopped")
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
                self._learner_gone()
        self._flush()  # nothing lost on a clean stop (the learner drains while stopping)

    def _flush(self) -> None:
        chunk, episodes = self.stepper.take()
        if chunk is not None:
            self._wait_for_credit()
            if self._send(wire.encode_chunk(chunk, self.actor_id)):
                self.counters["chunks_sent"] += 1
                self.credits -= 1
        if episodes:
            body = {"actor_id": self.actor_id, "episodes": episodes}
            if self._send(wire.encode_control("episode", body)):
                self.counters["episodes"] += len(episodes)
