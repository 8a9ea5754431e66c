"""The actor loop: step a vector env, act from the local model, stream records.

One actor process owns ``env.num_envs`` streams with run-unique ids
``actor_id * num_envs + j``. Records leave in chunks of ``chunk_steps`` vector
steps (stream-major, so each stream's records are consecutive in the chunk).
"""

from __future__ import annotations

import logging
import os
import socket
import time

import numpy as np
import torch
import zmq

from mouse import wire
from mouse.acting import ActingPolicy, ape_x_epsilons
from mouse.components import build_model
from mouse.config import RunConfig, from_dict
from mouse.envs import REWARD_TRANSFORMS, describe_env, make_vector_env
from mouse.records import StreamRecorder
from mouse.transport import actor_sockets, drain_latest

log = logging.getLogger("mouse.actor")


def _send_control(dealer: zmq.Socket, kind: str, body: dict) -> None:
    """Never blocks: with no live connection to the learner the message is dropped."""
    try:
        dealer.send_multipart(wire.encode_control(kind, body), zmq.NOBLOCK)
    except zmq.Again:
        pass


def connect(learner: str, actor_id: int = -1, stop=lambda: False):
    """Say hello until the learner answers (it may start later than the actor).

    The learner's welcome carries the run's config (actors and learner build the
    model from the same one) and the actor id (assigned when ``actor_id`` < 0),
    followed at once by the current weights.
    Returns (cfg, actor_id, sockets, weights frames, credits).
    """
    ctx = zmq.Context.instance()
    sockets = actor_sockets(ctx, learner)
    dealer = sockets[1]
    hello = {"actor_id": actor_id, "pid": os.getpid(), "host": socket.gethostname()}
    cfg, weights, credits = None, None, 0
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
                log.info("actor %d connected to %s", actor_id, learner)
                return cfg, actor_id, sockets, weights, credits
        if time.monotonic() >= next_warning:
            next_warning += 10
            log.warning("no answer from the learner at %s after %.0fs, still trying",
                        learner, time.monotonic() - start)
    for s in sockets:
        s.close(0)
    raise KeyboardInterrupt("stopped before the learner answered")


class Actor:
    """Acts in ``cfg.env`` as actor ``actor_id`` over connected ``sockets`` (see ``connect``)."""

    def __init__(self, cfg: RunConfig, actor_id: int, sockets, weights=None, credits: int = 4):
        self.cfg, self.actor_id = cfg, actor_id
        self.push, self.dealer, self.sub = sockets
        torch.set_num_threads(1)  # many actors share a node's cores
        self.info = describe_env(cfg.env, cfg.train.dqn.gamma)
        n = cfg.env.num_envs
        self.stream_ids = torch.arange(n) + actor_id * n
        self.env = make_vector_env(cfg.env)
        self.model = build_model(cfg, self.info).eval()
        # Ape-X slot: actors beyond num_actors (added later) reuse the slots' spread of epsilons
        slots = max(cfg.num_actors, 1)
        eps = ape_x_epsilons(cfg.actor.epsilon, cfg.actor.epsilon_alpha, (actor_id % slots) * n, n, slots * n)
        self.seed = cfg.actor.seed + 1000 * actor_id
        self.policy = ActingPolicy(self.model, cfg.actor.policy, cfg.acting_context, eps, self.seed)
        self.recorder = StreamRecorder(
            self.info.spec, self.stream_ids, self.info.num_env_actions,
            REWARD_TRANSFORMS[cfg.env.reward_transform], self.info.q_star_table,
        )
        self.version = -1
        if weights is not None:
            self._load_weights(weights)
        self.credits = credits  # record chunks we may still send before the learner acks
        self.last_heard = time.monotonic()  # any reply or weights from the learner
        self.next_beat = 0.0
        self.stopping = False
        self.counters = {"env_steps": 0, "chunks_sent": 0, "send_blocked_s": 0.0, "episodes": 0}

    # --- weights ---------------------------------------------------------------------
    def _load_weights(self, frames) -> None:
        version, state = wire.decode_weights(frames)
        if version <= self.version:  # out of order or repeated: weights only move forward
            return
        self.model.load_state_dict(state)
        self.version = version

    def _take_weights(self) -> None:
        latest = drain_latest(self.sub)
        if latest is not None:
            self.last_heard = time.monotonic()
            self._load_weights(latest)

    def _handle_replies(self) -> None:
        while self.dealer.poll(0):
            self._handle_reply(self.dealer.recv_multipart(copy=False))

    def _heartbeat(self) -> None:
        if time.monotonic() < self.next_beat:
            return
        self.next_beat = time.monotonic() + self.cfg.actor.heartbeat_s
        _send_control(self.dealer, "heartbeat",
                      {"actor_id": self.actor_id, "counters": {"version": self.version, **self.counters}})

    def _learner_gone(self) -> bool:
        """True (and stopping) once the learner has been silent for learner_timeout_s."""
        timeout = self.cfg.actor.learner_timeout_s
        if timeout and time.monotonic() - self.last_heard > timeout and not self.stopping:
            log.error("actor %d: no word from the learner for %.0fs, stopping", self.actor_id, timeout)
            self.stopping = True
        return self.stopping

    def _handle_reply(self, frames) -> None:
        self.last_heard = time.monotonic()
        if wire.is_weights(frames):
            return self._load_weights(frames)
        kind, body = wire.decode_control(frames)
        if kind == "ack":
            self.credits += body["credits"]
        elif kind == "stop" and not self.stopping:
            log.info("actor %d: the learner asked to stop", self.actor_id)
            self.stopping = True

    # --- sending -----------------------------------------------------------------------
    def _wait_for_credit(self) -> None:
        """Explicit backpressure: a chunk leaves only with a credit from the learner."""
        start = time.monotonic()
        while self.credits <= 0 and not self._learner_gone():
            if self.dealer.poll(50):
                self._handle_replies()
            self._take_weights()  # the newest weights are waiting too
            self._heartbeat()  # the learner must keep hearing from a throttled actor
        self.counters["send_blocked_s"] += time.monotonic() - start

    def _send(self, frames, flush_s: float = 2.0) -> bool:
        """Send without ever hanging on a gone learner: once stopping, give up after ``flush_s``."""
        start = time.monotonic()
        while not self.stopping or time.monotonic() - start < flush_s:
            try:
                self.push.send_multipart(frames, zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                self.push.poll(50, zmq.POLLOUT)
        return False

    # --- main loop -----------------------------------------------------------------------
    def run(self, max_steps: int = 0) -> dict:
        """Act until stopped (or for ``max_steps`` vector steps); returns the counters."""
        try:
            self._loop(max_steps)
            _send_control(self.dealer, "bye", {"actor_id": self.actor_id})
        finally:
            # linger: the last chunk and the bye are only queued; let zmq deliver them
            for sock, linger_ms in ((self.push, 2000), (self.dealer, 1000), (self.sub, 0)):
                sock.close(linger_ms)
            self.env.close()
        return self.counters

    def _loop(self, max_steps: int) -> None:
        n = self.cfg.env.num_envs
        obs, _ = self.env.reset(seed=self.seed)
        rec = self.recorder.reset(obs, self.version)
        pending, episodes = [rec], []
        # episode bookkeeping in numpy: per-step torch ops on [N] tensors cost more than the step
        ep_return, ep_len = np.zeros(n), np.zeros(n, dtype=np.int64)
        steps = 0
        while not self.stopping and (max_steps <= 0 or steps < max_steps):
            if self.sub.poll(0):
                self._take_weights()
            action = self.policy.act(rec)
            obs, reward, term, trunc, _ = self.env.step(action.numpy())
            rec = self.recorder.step(action, obs, reward, term, trunc, self.version)
            steps += 1
            self.counters["env_steps"] += n
            pending.append(rec)
            ep_return += rec["reward"].numpy()
            ep_len += rec["time"].numpy() > 0
            for j in np.flatnonzero(rec["done"].numpy()).tolist():
                episodes.append({"stream_id": int(self.stream_ids[j]), "return": float(ep_return[j]),
                                 "length": int(ep_len[j]), "policy_version": self.version})
                ep_return[j], ep_len[j] = 0.0, 0
            if len(pending) >= self.cfg.actor.chunk_steps:
                self._handle_replies()  # credits and "stop" arrive as replies
                self._flush(pending, episodes)
                pending, episodes = [], []
            if time.monotonic() >= self.next_beat:
                self._heartbeat()
                self._handle_replies()
                self._learner_gone()
        if pending or episodes:  # nothing lost on a clean stop (the learner drains while stopping)
            self._flush(pending, episodes)

    def _flush(self, pending: list, episodes: list) -> None:
        if pending:
            self._wait_for_credit()
            chunk = torch.stack(pending, dim=1).reshape(-1)  # [N, K] -> [N*K], stream-major
            if self._send(wire.encode_chunk(chunk, self.actor_id)):
                self.counters["chunks_sent"] += 1
                self.credits -= 1
        if episodes:
            body = {"actor_id": self.actor_id, "episodes": episodes}
            if self._send(wire.encode_control("episode", body)):
                self.counters["episodes"] += len(episodes)
