"""The monitor: console lines of fresh values only, rates of this process, actors that come and go."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from learner.monitor import ActorWatch, Monitor, Rates, headline
from learner.wandb_run import wandb_run_id
from mouse.config import RunConfig, WandbConfig


def labels(rows) -> list[str]:
    return [label for label, _ in rows]


def test_an_evaluation_shows_once_with_the_steps_it_was_taken_at(tmp_path):
    mon = Monitor(RunConfig(wandb=WandbConfig(mode="disabled")), tmp_path)
    interval = {"perf/env_steps": 1000.0, "perf/env_steps_per_s": 50.0, "replay/size": 900.0}
    mon.log({"eval/return": 351.0, "eval/env_steps": 80768.0}, step=10)
    mon.log(interval, step=12)
    rows = headline(mon.fresh)
    assert dict(rows)["eval return"] == "351.0 @ 80,768 steps"
    mon.console()
    assert mon.fresh == {}
    mon.log(interval, step=14)  # the next interval: no evaluation ended, no episode finished
    assert labels(headline(mon.fresh)) == ["env steps", "steps/s", "replay"]
    mon.finish()


def test_headline_keeps_its_order_and_counts_rejections():
    rows = headline({"actors/connected": 2.0, "perf/env_steps": 5.0, "wire/rejected/bad_magic": 3.0,
                     "wire/rejected/oversize": 1.0})
    assert rows == [("env steps", "5"), ("actors", "2"), ("rejected", "4")]


def test_rates_count_this_process_only():
    """A resumed learner starts at 10,000 env steps and 500 updates: its first rates are not
    those totals over a few seconds (the reported updates/s 365 after a resume)."""
    now = [100.0]
    rates = Rates(env_steps=10_000, updates=500, window_s=0.0, clock=lambda: now[0])
    now[0] += 2.0
    assert rates.take(10_100, 510) == (50.0, 5.0)
    now[0] += 4.0
    assert rates.take(10_100, 530) == (0.0, 5.0)  # both over the same 4 s


def test_rates_over_a_window_smooth_bursts():
    """Records that arrive every other interval read as a steady rate, not 0, 200, 0, 200."""
    now = [0.0]
    rates = Rates(env_steps=0, updates=0, window_s=10.0, clock=lambda: now[0])
    seen, steps = [], 0
    for i in range(1, 9):  # 5 s intervals; 1,000 steps arrive in every second one
        now[0] += 5.0
        steps += 1000 if i % 2 == 0 else 0
        seen.append(rates.take(steps, 10 * i))
    assert [s for s, _ in seen[1:]] == [100.0] * 7  # what arrived over the last 10 s, every time
    assert all(u == 2.0 for _, u in seen)


def test_actor_watch_reports_joins_and_losses():
    actors = {0: SimpleNamespace(actor_id=0, last_seen=100.0), 1: SimpleNamespace(actor_id=1, last_seen=100.0)}
    ingest = SimpleNamespace(lock=threading.Lock(), actors=actors, actor_timeout_s=10.0)
    watch = ActorWatch()
    assert watch.update(ingest, now=101.0) == ([0, 1], [])
    actors[1].last_seen = 0.0  # said bye
    assert watch.update(ingest, now=105.0) == ([], [1])
    assert watch.update(ingest, now=112.0) == ([], [0])  # silent for more than 10 s
    actors[0].last_seen = 112.0
    assert watch.update(ingest, now=113.0) == ([0], [])
    assert watch.connected == {0}


def test_the_wandb_id_is_kept_in_the_run_directory(tmp_path):
    first = wandb_run_id(tmp_path)
    assert first.isalnum() and wandb_run_id(tmp_path) == first
    assert (tmp_path / "wandb-id").read_text().strip() == first
