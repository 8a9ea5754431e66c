"""Actor process entry point: `mouse actor --learner tcp://HOST:PORT [--actor-id N] [--keys DIR]`.

The actor needs nothing but the learner's address (and, for a learner with CurveZMQ on,
its keys): the learner's welcome carries the run config, an actor id when none is
given, and the weights.
"""

from __future__ import annotations

import logging
import os
import signal

import torch

from mouse.keys import load_actor_keys
from mouse.status import write_status

from .actor import Actor
from .join import LearnerStopping, connect

log = logging.getLogger("mouse.actor")


def _same_dir(a: str, b: str) -> bool:
    return bool(a) and os.path.realpath(a) == os.path.realpath(b)


def main(learner: str, actor_id: int = -1, max_steps: int = 0, status_file: str = "",
         keys: str = "", connect_timeout_s: float = 0.0, run_dir: str = "") -> dict:
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
            learner, actor_id, stop=lambda: stop["now"], status_path=status, keys=keys_pair,
            timeout_s=connect_timeout_s)
    except KeyboardInterrupt:
        return {}
    except LearnerStopping as e:  # the run is ending: nothing to join
        log.info("%s", e)
        write_status(status, {"state": "stopped", "learner": learner, "stop_reason": "the learner asked to stop"})
        return {}
    except TimeoutError as e:  # no learner (failed, finished, never started): one line, exit 1
        raise SystemExit(f"error: {e}") from None
    if run_dir and not _same_dir(cfg.run_dir, run_dir):
        # another run's learner took the address (a port reused after ours ended)
        for s in sockets:
            s.close(0)
        raise SystemExit(f"error: the learner at {learner} serves run directory {cfg.run_dir!r}, "
                         f"not {run_dir!r}: this actor's run has ended there")
    actor = Actor(cfg, actor_id, sockets, weights, welcome, status_path=status)
    if stop["now"]:
        actor.stop("signal before start")
    counters = actor.run(max_steps)
    log.info("actor %d done: %s", actor_id, counters)
    return counters
