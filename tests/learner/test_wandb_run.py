"""The learner's W&B run, read back from its offline files: x-axes, group, config with the
git commit, summaries, and a run that still finishes when its W&B service was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from learner.monitor import Monitor
from mouse.cli import parse_run_config
from tests.wandb_records import definitions, rows, run_files, run_record, summary, wait_finished

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def monitor(run_dir: Path) -> Monitor:
    run_dir.mkdir(parents=True)  # the learner makes it before its Monitor
    return Monitor(parse_run_config(["--wandb.mode", "offline", "--run-dir", str(run_dir)]), run_dir)


def log_a_run(m: Monitor, first_update: int = 0) -> None:
    for i in range(3):
        u = first_update + 10 * (i + 1)
        m.log({"perf/env_steps": 100 * u, "perf/elapsed_s": 0.5 * u, "loss/total": 1.0 / u}, step=u)
    u = first_update + 40
    m.log({"eval/return": 30.0 + first_update, "eval/env_steps": 100 * (u - 5)}, step=u)


LEARNER_SUMMARY = {"best_eval_return": 31.0, "final_eval_return": 30.0, "env_steps": 4000,
                   "updates": 40, "solved_at": [3500, 35, 0.25], "stop_reason": "solved: eval return >= 30",
                   "wandb_dir": "ignored: not a number", "actors_seen": [0, 1]}


def test_dashboards_axes_group_config_and_summary(tmp_path):
    run_dir = tmp_path / "cartpole-7"
    m = monitor(run_dir)
    log_a_run(m)
    m.summary(LEARNER_SUMMARY)
    m.finish()

    (path,) = run_files(run_dir)
    assert wait_finished(path)
    defs = definitions(path)
    # env steps and wall time are x-axes (plotted against W&B's step themselves)
    assert defs["perf/env_steps"].step_metric == "" and defs["perf/elapsed_s"].step_metric == ""
    # every other chart is against env steps; evaluations against the env steps of their weights
    assert defs["*"].step_metric == "perf/env_steps"
    assert defs["eval/return"].step_metric == "eval/env_steps"
    assert defs["eval/return"].summary.max and defs["eval/return"].summary.last

    run = run_record(path)
    assert run.run_group == "cartpole-7" and run.job_type == "learner"
    config = {i.key: i.value_json for i in run.config.update}
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert head.stdout.strip() and head.stdout.strip() in config["code"]
    assert '"hidden_dim"' in config["model"]  # the run's config itself

    s = summary(path)
    assert s["best_eval_return"] == 31.0 and s["solved"] is True
    assert (s["solved_at_env_steps"], s["solved_at_updates"], s["solved_at_minutes"]) == (3500, 35, 0.25)
    assert s["stop_reason"].startswith("solved") and "wandb_dir" not in s
    assert s["eval/return"]["max"] == 30.0  # the aggregate from the definition


def wandb_core_children() -> set[int]:
    """This process's wandb-core children (the W&B service of runs it opened)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"wandb-core" in cmd:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the W&B service through /proc")
def test_a_killed_wandb_service_still_gives_a_finished_run(tmp_path):
    """What a plain `scancel` of a Slurm learner does: SIGTERM to the W&B service as well."""
    run_dir = tmp_path / "run"
    m = monitor(run_dir)
    log_a_run(m)
    ours = wandb_core_children()  # one service per process, shared by its runs
    assert ours, "no W&B service process found"
    time.sleep(2.5)  # one flush of the .wandb file (WANDB_FLUSH_S)
    for pid in ours:
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    log_a_run(m, first_update=100)  # the final evaluation comes after the signal
    m.summary(LEARNER_SUMMARY)
    m.finish()  # no exception

    first, second = run_files(run_dir)
    assert wait_finished(second)
    assert run_record(first).run_id == run_record(second).run_id  # one W&B run, two service sessions
    assert any(r.get("loss/total") for r in rows(first))  # flushed before the kill
    assert rows(second)[-1]["eval/return"] == 130.0  # logged after the kill, not lost
    assert summary(second)["best_eval_return"] == 31.0
    assert run_record(second).run_group == "run" and "eval/return" in definitions(second)


def test_actor_rates_from_the_learners_bookkeeping():
    """--wandb.actor-metrics: env steps/s over the interval and policy lag, per connected actor."""
    from learner.wandb_run import ActorRates

    clock = [50.0]
    fresh, stale = time.monotonic(), time.monotonic() - 60  # seen now / a minute ago
    actors = {b"a": SimpleNamespace(actor_id=0, steps=1000, version=7, last_seen=fresh),
              b"b": SimpleNamespace(actor_id=1, steps=400, version=-1, last_seen=fresh),
              b"c": SimpleNamespace(actor_id=2, steps=900, version=9, last_seen=stale)}
    ingest = SimpleNamespace(lock=threading.Lock(), actors=actors, actor_timeout_s=10.0)
    rates = ActorRates(clock=lambda: clock[0])
    # the first interval has no rate yet; an actor without records has no lag; actor 2 is gone
    assert rates.take(ingest, weights_version=10) == {"actors/0/policy_lag": 3}
    clock[0] += 4.0
    actors[b"a"].steps, actors[b"b"].steps, actors[b"b"].version = 1600, 420, 10
    assert rates.take(ingest, weights_version=12) == {
        "actors/0/env_steps_per_s": 150.0, "actors/0/policy_lag": 5,
        "actors/1/env_steps_per_s": 5.0, "actors/1/policy_lag": 2}
