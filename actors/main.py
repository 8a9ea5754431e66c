"""Actor process entry point: `mouse actor --learner tcp://HOST:PORT [--actor-id N]`.

The actor needs nothing but the learner's address: the learner's welcome
carries the run config, an actor id when none is given, and the weights.
"""

from __future__ import annotations

import logging
import signal

from mouse.actor import Actor, connect

log = logging.getLogger("mouse.actor")


def main(learner: str, actor_id: int = -1, max_steps: int = 0) -> dict:
    stop = {"now": False}
    actor = None

    def handler(signum, _frame):
        stop["now"] = True
        if actor is not None:
            actor.stopping = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        cfg, actor_id, sockets, weights, credits = connect(learner, actor_id, stop=lambda: stop["now"])
    except KeyboardInterrupt:
        return {}
    actor = Actor(cfg, actor_id, sockets, weights, credits)
    actor.stopping = stop["now"]
    counters = actor.run(max_steps)
    log.info("actor %d done: %s", actor_id, counters)
    return counters


if __name__ == "__main__":
    import sys

    from mouse.cli import main as cli_main

    cli_main(["actor", *sys.argv[1:]])
