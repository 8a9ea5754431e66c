"""The learner's decisions (learner.schedule.TrainLoop) driven by a fake clock and fake data.

No sockets, threads or models: each test sets the counters, ticks the loop and
reads which callbacks it called.
"""

from __future__ import annotations

import math

import pytest

from learner.schedule import Counters, Hooks, LoopTimes, TrainLoop
from mouse.config import BudgetConfig, EvalConfig, LearnerConfig, RunConfig


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Rig:
    """Counters the test sets, callbacks that record what the loop asked for."""

    def __init__(self, learner: dict | None = None, budget: dict | None = None,
                 evaluation: dict | None = None, updates: int = 0):
        lc = {**dict(warmup_steps=100, replay_ratio=0.1, max_ahead_steps=50, publish_every=3,
                     log_every_s=5.0, checkpoint_every_s=60.0), **(learner or {})}
        self.cfg = RunConfig(learner=LearnerConfig(**lc),
                             budget=BudgetConfig(**{"max_env_steps": 0, "max_minutes": 0, **(budget or {})}),
                             eval=EvalConfig(**{"every_s": 20.0, **(evaluation or {})}))
        self.stored = self.inserted = self.env_steps = 0
        self.windows = 1
        self.calls: list[str] = []
        self.train_ok = True
        self.eval_busy = False
        self.solved = False
        self.clock = Clock()
        hooks = Hooks(train=self._train, publish=lambda: self.calls.append("publish"),
                      start_eval=self._start_eval, poll_eval=lambda: self.solved,
                      checkpoint=lambda: self.calls.append("checkpoint"),
                      log=lambda: self.calls.append("log"), idle=lambda: self.calls.append("idle"))
        counters = Counters(stored=lambda: self.stored, windows=lambda: self.windows,
                            inserted=lambda: self.inserted, env_steps=lambda: self.env_steps)
        self.loop = TrainLoop(self.cfg, hooks, counters, updates=updates, clock=self.clock)

    def _train(self) -> bool:
        self.calls.append("train")
        return self.train_ok

    def _start_eval(self) -> bool:
        if self.eval_busy:
            return False
        self.calls.append("eval")
        return True

    def insert(self, n: int) -> None:
        self.stored += n
        self.inserted += n
        self.env_steps += n

    def ticks(self, n: int) -> list[str]:
        self.calls = []
        for _ in range(n):
            assert self.loop.tick()
        return self.calls

    def count(self, what: str) -> int:
        return self.calls.count(what)


def test_no_update_before_warmup_or_without_a_window():
    r = Rig()
    r.insert(99)
    assert r.ticks(10) == ["idle"] * 10
    r.insert(1)
    r.windows = 0
    assert r.ticks(5) == ["idle"] * 5
    r.windows = 1
    assert r.ticks(1) == ["train"]


def test_updates_follow_the_replay_ratio_exactly():
    r = Rig()
    r.insert(1000)
    r.ticks(500)
    assert r.count("train") == 100 and r.loop.updates == 100  # 0.1 updates per inserted step
    r.insert(10)
    r.ticks(50)
    assert r.count("train") == 1 and r.loop.updates == 101


def test_a_train_call_without_a_batch_is_not_an_update():
    r = Rig()
    r.insert(1000)
    r.train_ok = False
    r.ticks(20)
    assert r.count("train") == 20 and r.loop.updates == 0 and r.count("publish") == 0


def test_weights_are_published_every_publish_every_updates():
    r = Rig()
    r.insert(1000)
    calls = r.ticks(100)
    trains = [i for i, c in enumerate(calls) if c == "train"]
    publishes = [i for i, c in enumerate(calls) if c == "publish"]
    assert r.loop.updates == 100 and len(publishes) == 33
    assert all(calls[i - 1] == "train" for i in publishes)  # right after the update that made it
    assert [trains.index(i - 1) + 1 for i in publishes][:3] == [3, 6, 9]


def test_resumed_run_counts_the_ratio_from_this_process_but_publishes_on_run_updates():
    r = Rig(updates=1001)
    r.insert(100)
    r.ticks(50)
    assert r.loop.updates == 1011  # 10 updates for 100 new steps, whatever the run did before
    assert r.count("publish") == 4  # at the run's updates 1002, 1005, 1008 and 1011


def test_log_checkpoint_and_eval_follow_the_clock():
    r = Rig()
    assert r.ticks(3) == ["idle"] * 3  # nothing is due at the start
    r.clock.t += 5
    assert r.ticks(1) == ["log", "idle"]
    r.clock.t += 15
    assert r.ticks(1) == ["log", "eval", "idle"]
    r.clock.t += 40
    assert r.ticks(1) == ["log", "eval", "checkpoint", "idle"]
    assert r.ticks(1) == ["idle"]


def test_busy_evaluator_is_asked_again_at_every_tick_until_it_starts():
    r = Rig()
    r.eval_busy = True
    r.clock.t += 20
    r.ticks(3)
    assert r.count("eval") == 0
    r.eval_busy = False
    assert "eval" in r.ticks(1)
    assert "eval" not in r.ticks(1)  # then not before every_s more seconds


def test_evaluation_off_when_every_s_is_zero():
    r = Rig(evaluation={"every_s": 0})
    r.clock.t += 10_000
    assert "eval" not in r.ticks(3)
    assert r.loop.next_eval == math.inf


@pytest.mark.parametrize("budget,advance,expected", [
    ({"max_env_steps": 500}, lambda r: r.insert(500), "500 env steps"),
    ({"max_minutes": 2}, lambda r: setattr(r.clock, "t", r.clock.t + 120), "2 minutes"),
])
def test_budget_ends_the_loop_with_its_reason(budget, advance, expected):
    r = Rig(budget=budget)
    r.insert(100)
    assert r.loop.tick()
    advance(r)
    assert not r.loop.tick()
    assert expected in r.loop.stop_reason
    assert not r.loop.tick()  # and stays ended


def test_a_solving_evaluation_ends_the_loop():
    r = Rig()
    r.solved = True
    assert not r.loop.tick()
    assert r.loop.stop_reason.startswith("solved")


def test_stop_request_ends_the_loop_and_keeps_its_first_reason():
    r = Rig()
    r.loop.request_stop("signal 15")
    r.loop.request_stop("later")
    assert not r.loop.tick() and r.loop.stop_reason == "signal 15"


def test_backpressure_holds_actors_only_when_they_run_ahead_of_training():
    r = Rig()
    r.insert(140)
    assert r.loop.may_receive()  # within warm-up + max_ahead (100 + 50)
    r.insert(20)
    assert not r.loop.may_receive()  # 160 inserted, nothing trained: 10 steps too far ahead
    r.ticks(20)  # 16 updates account for 160 steps
    assert r.loop.updates == 16 and r.loop.may_receive()
    r.windows = 0
    r.insert(10_000)
    assert r.loop.may_receive()  # no window yet: more records are the only way forward
    r.windows = 1
    assert not r.loop.may_receive()
    r.loop.request_stop()
    assert r.loop.may_receive()  # stopping: whatever the actors still send is kept


def test_backpressure_off_when_max_ahead_is_zero():
    r = Rig(learner={"max_ahead_steps": 0})
    r.insert(1_000_000)
    assert r.loop.may_receive()


def test_loop_times_split_wall_time_by_hook_and_reset_on_take():
    clock = Clock()
    times = LoopTimes(clock)

    def spend(seconds, result=None):
        def hook(*_):
            clock.t += seconds
            return result
        return hook

    hooks = times.timed(Hooks(train=spend(3.0, True), publish=spend(0.5), start_eval=spend(0.25, True),
                              poll_eval=spend(0.25, False), checkpoint=spend(1.0), log=spend(0.5),
                              idle=spend(4.0)))
    assert hooks.train() is True and hooks.start_eval() is True and hooks.poll_eval() is False
    for h in (hooks.publish, hooks.checkpoint, hooks.log, hooks.idle):
        h()
    clock.t += 0.5  # the loop's own bookkeeping: no hook's
    shares = times.take(batch_wait_s=1.0)  # 1 s of the train hook's 3 s waited for a batch
    assert shares == pytest.approx({
        "perf/loop/train": 0.3, "perf/loop/batch_wait": 0.1, "perf/loop/updating": 0.2,
        "perf/loop/publish": 0.05, "perf/loop/eval": 0.05, "perf/loop/checkpoint": 0.1,
        "perf/loop/log": 0.05, "perf/loop/idle": 0.4, "perf/loop/not_training": 0.4})
    clock.t += 2.0
    hooks.train()  # the next interval starts from zero
    assert times.take()["perf/loop/train"] == pytest.approx(0.6)


def test_loop_times_keep_counting_when_a_hook_raises():
    clock = Clock()
    times = LoopTimes(clock)

    def fail():
        clock.t += 2.0
        raise OSError("disk full")

    hooks = times.timed(Hooks(train=fail, publish=fail, start_eval=fail, poll_eval=fail,
                              checkpoint=fail, log=fail, idle=fail))
    with pytest.raises(OSError):
        hooks.checkpoint()
    assert times.take()["perf/loop/checkpoint"] == pytest.approx(1.0)
