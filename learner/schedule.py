"""The learner's decisions, apart from its sockets and threads.

``TrainLoop`` decides, at each ``tick()``, what the learner does next: log,
evaluate, checkpoint, train one update (warm-up and replay ratio permitting),
publish weights, or stop (budget, solved, a stop request). It reads time from
an injected clock and acts only through the callbacks in ``Hooks``, so a test
drives it with a fake clock and fake callbacks; ``learner.learner.Learner``
wires it to the real replay, optimizer, ingest thread and monitor.

``may_receive()`` is the backpressure decision the ingest thread asks before
it returns credits to actors. ``LoopTimes`` splits the loop's wall time by what
it was spent on, for the learner's ``perf/loop/*`` metrics.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Callable

from mouse.config import RunConfig


@dataclass
class Hooks:
    """What the loop drives. Every callback is a plain function of no or few arguments."""

    train: Callable[[], bool]  # one update; False when no batch came in time
    publish: Callable[[], None]  # broadcast the current weights (version + 1)
    start_eval: Callable[[], bool]  # start a background evaluation; False if one is running
    poll_eval: Callable[[], bool]  # log a finished evaluation; True when it solved the run
    checkpoint: Callable[[], None]
    log: Callable[[], None]
    idle: Callable[[], None]  # nothing to do now (the real one sleeps a moment)


@dataclass
class Counters:
    """What the loop reads of the data side (each a function, read when needed)."""

    stored: Callable[[], int]  # steps held in the replay
    windows: Callable[[], int]  # windows the sampler can cut now
    inserted: Callable[[], int]  # steps inserted by this learner process
    env_steps: Callable[[], int]  # env steps of the whole run (resumes included)


class TrainLoop:
    """One learner's schedule. ``updates`` counts the run's updates (a resumed run starts above 0)."""

    def __init__(self, cfg: RunConfig, hooks: Hooks, counters: Counters, *, updates: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.cfg, self.hooks, self.counters, self.clock = cfg, hooks, counters, clock
        self.updates = updates
        self.updates0 = updates  # the replay ratio counts this process's updates and inserts
        self.stop_requested = False
        self.stop_reason: str | None = None
        self.start = clock()
        lc, every = cfg.learner, cfg.eval.every_s
        self.next_log = self.start + lc.log_every_s
        self.next_eval = self.start + every if every > 0 else math.inf
        self.next_checkpoint = self.start + lc.checkpoint_every_s

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.start

    def request_stop(self, reason: str = "stop requested") -> None:
        self.stop_requested = True
        self.stop_reason = self.stop_reason or reason

    # --- decisions --------------------------------------------------------------------------
    def budget_left(self) -> bool:
        """False once a stop was requested or a budget is spent (``stop_reason`` says which)."""
        if self.stop_requested:
            return False
        b = self.cfg.budget
        if b.max_env_steps and self.counters.env_steps() >= b.max_env_steps:
            self.request_stop(f"budget: {b.max_env_steps:,} env steps reached")
        elif b.max_minutes and self.elapsed_s >= 60 * b.max_minutes:
            self.request_stop(f"budget: {b.max_minutes:g} minutes reached")
        return not self.stop_requested

    def may_update(self) -> bool:
        """Warm-up done, a window to sample, and training behind the replay ratio."""
        lc = self.cfg.learner
        if self.counters.stored() < lc.warmup_steps or self.counters.windows() == 0:
            return False
        return self.updates - self.updates0 < lc.replay_ratio * self.counters.inserted()

    def may_receive(self) -> bool:
        """Backpressure: False while the actors are more than max_ahead_steps ahead of training."""
        lc = self.cfg.learner
        if not lc.max_ahead_steps or self.stop_requested or self.counters.windows() == 0:
            return True  # (no full window yet: more records are the only way forward)
        owed = (self.updates - self.updates0) / lc.replay_ratio  # steps the updates account for
        return self.counters.inserted() < max(lc.warmup_steps, owed) + lc.max_ahead_steps

    # --- one round ---------------------------------------------------------------------------
    def tick(self) -> bool:
        """One round of the loop; False once the learner should stop (``stop_reason`` says why)."""
        if not self.budget_left():
            return False
        h, lc = self.hooks, self.cfg.learner
        now = self.clock()
        if now >= self.next_log:
            h.log()
            self.next_log = now + lc.log_every_s
        if h.poll_eval():
            self.request_stop(f"solved: eval return >= {self.cfg.budget.solved_return:g}")
            return False
        if now >= self.next_eval and h.start_eval():
            self.next_eval = now + self.cfg.eval.every_s
        if now >= self.next_checkpoint:
            h.checkpoint()
            self.next_checkpoint = now + lc.checkpoint_every_s
        if not self.may_update():
            h.idle()
        elif h.train():
            self.updates += 1
            if self.updates % lc.publish_every == 0:
                h.publish()
        return True


class LoopTimes:
    """Where the train loop's wall time goes, by hook, between two ``take()`` calls.

    ``timed(hooks)`` returns hooks that add their own run time to their part: ``train``
    (the whole train hook: batch wait and update), ``publish``, ``eval`` (start and poll),
    ``checkpoint``, ``log`` and ``idle`` (warm-up, replay ratio: no update allowed yet). What
    no hook took is the loop's own bookkeeping. On a GPU an update's kernels run on after
    its call returns: their time shows where the next host sync waits (batch wait, log).
    """

    PARTS = {"train": "train", "publish": "publish", "start_eval": "eval", "poll_eval": "eval",
             "checkpoint": "checkpoint", "log": "log", "idle": "idle"}

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.seconds = dict.fromkeys(dict.fromkeys(self.PARTS.values()), 0.0)
        self.since = clock()

    def timed(self, hooks: Hooks) -> Hooks:
        return Hooks(**{f.name: self._timer(self.PARTS[f.name], getattr(hooks, f.name))
                        for f in fields(Hooks)})

    def _timer(self, part: str, fn: Callable):
        def run(*args):
            t = self.clock()
            try:
                return fn(*args)
            finally:
                self.seconds[part] += self.clock() - t
        return run

    def take(self, batch_wait_s: float = 0.0) -> dict[str, float]:
        """Each part's share of the wall time since the last take (``batch_wait_s`` of the train
        hook's time was spent waiting for batches, the rest ``updating``), and ``not_training``:
        the share spent neither updating nor idle (waiting for batches, publishing, evaluation,
        checkpoints, logging, the loop itself)."""
        now = self.clock()
        wall = now - self.since
        if wall <= 0:
            return {}
        out = {f"perf/loop/{part}": s / wall for part, s in self.seconds.items()}
        out["perf/loop/batch_wait"] = batch_wait_s / wall
        out["perf/loop/updating"] = (self.seconds["train"] - batch_wait_s) / wall
        out["perf/loop/not_training"] = max(0.0, 1.0 - out["perf/loop/updating"] - out["perf/loop/idle"])
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        self.since = now
        return out
