"""End to end: env steps/s and updates/s of `mouse run` with 1 and 2 actors on this machine.

    python benchmarks/bench_e2e.py [--seconds 60] [--env CartPole-v1] [extra `mouse run` flags]

Each configuration is a real `mouse run` (learner + actor processes over TCP on
loopback) with the default config, a wall-time budget and no stop-when-solved;
rates come from the learner's counters (env steps received, updates made) over
the whole run, start-up included. The 1-actor run is the baseline of the ratios.

It also prints where the learner's train loop spent its wall time (the mean of the
``perf/loop/*`` shares the run logged): updating, idle (warm-up or the replay ratio: no
update allowed, waiting for env steps) and not training (waiting for batches, publishing,
evaluating, checkpoints, logging, the loop itself; the issue's goal is < 10%).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(actors: int, seconds: float, env: str, extra: list[str]) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"mouse-e2e-{actors}-"))
    cmd = [sys.executable, "-m", "mouse", "run", "--run-dir", str(run_dir), "--learner.port", "0",
           "--num-actors", str(actors), "--env.env-id", env, "--budget.max-minutes", str(seconds / 60),
           "--budget.max-env-steps", "0", "--budget.solved-return", "inf", "--eval.every-s", "0",
           "--eval.episodes", "2", "--wandb.mode", "disabled", *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"mouse run failed:\n{proc.stderr[-3000:]}")
    s = json.loads((run_dir / "summary.json").read_text())
    s["total_s"] = time.monotonic() - t0
    s["loop"] = loop_shares(run_dir / "metrics.jsonl")
    return s


def loop_shares(metrics: Path) -> dict[str, float]:
    """The mean of each ``perf/loop/*`` share over the run's log lines."""
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    lines = [m for m in lines if "perf/loop/not_training" in m]
    keys = {k for m in lines for k in m if k.startswith("perf/loop/")}
    return {k.removeprefix("perf/loop/"): sum(m.get(k, 0.0) for m in lines) / len(lines) for k in keys}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="learner wall-time budget per configuration")
    p.add_argument("--env", default="CartPole-v1")
    a, extra = p.parse_known_args()
    rows = []
    for n in (1, 2):
        s = run(n, a.seconds, a.env, extra)
        secs = s["wall_minutes"] * 60
        rows.append((n, s["env_steps"] / secs, s["updates"] / secs, s))
    base_steps, base_updates = rows[0][1], rows[0][2]
    print(f"mouse run end to end, {a.env}, ~{a.seconds:.0f} s learner budget per row, default config {extra}")
    print(f"{'actors':>6}{'env steps/s':>14}{'ratio':>7}{'updates/s':>12}{'ratio':>7}{'env steps':>11}{'updates':>9}"
          f"   learner loop: {'updating':>8}{'idle':>6}{'not training':>13} (batch wait, publish, eval, log, ckpt)")
    for n, steps, updates, s in rows:
        lp = s["loop"]
        parts = " ".join(f"{lp[k]:.1%}" for k in ("batch_wait", "publish", "eval", "log", "checkpoint"))
        print(f"{n:>6}{steps:>14,.0f}{steps / base_steps:>7.2f}{updates:>12,.1f}{updates / base_updates:>7.2f}"
              f"{s['env_steps']:>11,}{s['updates']:>9,}"
              f"                 {lp['updating']:>8.1%}"
              f"{lp['idle']:>6.1%}{lp['not_training']:>13.1%} ({parts})")


if __name__ == "__main__":
    main()
