"""Actor process entry point: `mouse actor --learner tcp://HOST:PORT [--actor-id N] [--keys DIR]`.

The actor needs nothing but the learner's address (and, for a learner with CurveZMQ on,
its keys): the learner's welcome carries the run config, an actor id when none is
given, and the weights.
"""

from __future__ import annotations

import logging
import signal

import torch

from mouse.keys import load_actor_keys

from .actor import Actor, connect

log = logging.getLogger("mouse.actor")


def main(learner: str, actor_id: int = -1, max_steps: int = 0, status_file: str = "",
         keys: str = "") -> dict:
    keys_pair = load_actor_keys(keys) if keys else None  # a missing file: one clear line, at once
    torch.set_num_threads(1)  # many actor processes share a node's cores
    status = status_file or None
    stop = {"now": False}
    actor = None

    def handler(signum, _frame):
        stop["now"] = True
        if actor is not None:
            actor.stop(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    try:
        cfg, actor_id, sockets, weights, welcome = connect(
            learner, actor_id, stop=lambda: stop["now"], status_path=status, keys=keys_pair)
    except KeyboardInterrupt:
        return {}
    actor = Actor(cfg, actor_id, sockets, weights, welcome, status_path=status)
    if stop["now"]:
        actor.stop("signal before start")
    counters = actor.run(max_steps)
    log.info("actor %d done: %s", actor_id, counters)
    return counters
