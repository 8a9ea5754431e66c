"""Joining a learner: say hello until it answers with a welcome (the session, the run config,
its credits) and the current weights, or refuses.

The running actor around the sockets this hands over is ``actors.actor.Actor``, which says
hello again through ``hello_body`` when its learner went away.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

import zmq

from mouse import wire
from mouse.config import RunConfig, from_dict
from mouse.keys import refusal_message
from mouse.status import write_status
from mouse.transport import HandshakeWatch, actor_sockets

log = logging.getLogger("mouse.actor")

HELLO_EVERY_S = 1.0  # a hello unanswered this long is said again
HANDSHAKE_POLL_MS = 50  # meanwhile, how often to look whether the connection has just come up


class ActorRefused(ValueError):
    """The learner will not take this actor (the reason is its own words); `mouse actor` exits
    with it as a one-line error."""


class LearnerStopping(Exception):
    """The learner is stopping and takes no new actor: nothing to do (`mouse actor` exits 0)."""


@dataclass(frozen=True)
class Welcome:
    actor_id: int
    token: str
    incarnation: str
    credits: int  # the session's total grant so far
    config: dict


def send_control(dealer: zmq.Socket, kind: str, body: dict) -> None:
    """Never blocks: with no live connection to the learner the message is dropped."""
    try:
        dealer.send_multipart(wire.encode_control(kind, body), zmq.NOBLOCK)
    except zmq.Again:
        pass


def hello_body(actor_id: int, token: str, version: int) -> dict:
    return {"actor_id": actor_id, "token": token, "pid": os.getpid(),
            "host": socket.gethostname()[:wire.MAX_TEXT], "version": version}


def _decode_reply(frames) -> tuple[str, dict] | None:
    try:
        return wire.decode_control(frames)
    except wire.WireError as e:
        log.warning("ignoring a malformed reply from the learner's address: %s", e)
        return None


def connect(learner: str, actor_id: int = -1, stop=lambda: False, status_path=None, keys=None,
            timeout_s: float = 0.0):
    """Say hello until the learner answers (it may start later than the actor), for at most
    ``timeout_s`` seconds (0 = no limit; then ``TimeoutError``).

    The learner's welcome carries the session (actor id, assigned when ``actor_id`` < 0;
    token; incarnation; credits) and the run's config (actors and learner build the model
    from the same one), followed at once by the current weights. A learner that refuses
    the actor (its id in use, out of range) raises ``ActorRefused``; one that is stopping
    (it takes no new actor) raises ``LearnerStopping``.
    ``status_path`` (optional) gets a status file saying the actor is connecting.
    ``keys`` (``mouse.keys.ActorKeys``): CurveZMQ, talking only to the learner whose public
    key they pin. A learner that is up but refuses the handshake (keys missing, not allowed,
    another learner's) is a ValueError with one line saying which, rather than a wait for ever.
    Returns (cfg, actor_id, sockets, weights frames, Welcome).
    """
    write_status(status_path, {"state": "connecting", "learner": learner, "actor_id": actor_id})
    ctx = zmq.Context.instance()
    handshakes = HandshakeWatch()
    sockets = actor_sockets(ctx, learner, keys=keys, handshakes=handshakes)
    try:
        joined = _say_hello(learner, actor_id, sockets[1], handshakes, stop, status_path, keys, timeout_s)
    except BaseException:
        handshakes.close()
        for s in sockets:
            s.close(0)
        raise
    handshakes.close()
    cfg, welcome, weights = joined
    log.info("actor %d connected to %s", welcome.actor_id, learner)
    return cfg, welcome.actor_id, sockets, weights, welcome


def _say_hello(learner: str, actor_id: int, dealer, handshakes, stop, status_path, keys, timeout_s):
    """connect's loop: (cfg, Welcome, weights frames) once welcomed; raises on a refusal or stop."""
    hint = " (if it requires CurveZMQ keys, pass --keys DIR)" if keys is None and learner.startswith("tcp://") \
        else ""
    hello = hello_body(actor_id, "", -1)
    cfg, welcome = None, None
    start, next_warning = time.monotonic(), time.monotonic() + 5
    while not stop():
        handshakes.came_up()  # (a connection that is up already takes this hello)
        send_control(dealer, "hello", hello)  # dropped until the connection is up: resent below
        quiet_until = time.monotonic() + HELLO_EVERY_S
        while time.monotonic() < quiet_until:
            if not dealer.poll(HANDSHAKE_POLL_MS):
                if handshakes.came_up():  # the learner is up only now: say hello at once
                    break
                continue
            quiet_until = time.monotonic() + HELLO_EVERY_S
            frames = dealer.recv_multipart(copy=False)
            if wire.is_weights(frames):
                if welcome is not None:  # (checked by the Actor) they follow the welcome at once
                    return cfg, welcome, frames
                continue
            kind, body = _decode_reply(frames) or (None, None)
            if kind == "stop" and body["refused"]:
                raise ActorRefused(f"the learner at {learner} refused this actor: {body['reason']}")
            if kind == "stop":  # (after a welcome too: its weights were lost, and every hello is
                # answered "stop" now)
                raise LearnerStopping(f"the learner at {learner} is stopping: it takes no new actor")
            if kind == "welcome":
                try:
                    cfg = from_dict(RunConfig, body["config"])
                except (ValueError, TypeError) as e:
                    log.warning("ignoring a welcome with an unusable config: %s", e)
                    continue
                welcome = Welcome(body["actor_id"], body["token"], body["incarnation"],
                                  body["credits"], body["config"])
        refused = handshakes.refused()
        if refused:
            error = refusal_message(learner, refused, keys)
            write_status(status_path, {"state": "refused", "learner": learner, "error": error})
            raise ValueError(error)
        if timeout_s and time.monotonic() - start >= timeout_s:
            raise TimeoutError(f"no answer from a learner at {learner} within {timeout_s:g}s{hint}")
        if time.monotonic() >= next_warning:
            next_warning += 10
            log.warning("no answer from the learner at %s after %.0fs, still trying%s",
                        learner, time.monotonic() - start, hint)
    raise KeyboardInterrupt("stopped before the learner answered")
