"""Learning results: real `mouse run`s, one after another, and a table per study from what
each run writes (RUN_DIR/metrics.jsonl, RUN_DIR/summary.json).

    python benchmarks/learning.py --study cartpole [--study vec_dqn --study memory]
                                  [--seeds 3] [--out DIR]

Studies (seed k sets --actor.seed, --learner.seed and --replay.seed to k; the evaluation
episodes stay the same, --eval.seed; W&B off):

cartpole  the default run (examples/cartpole.json: CartPole-v1, mlp, dqn head, 2 actors,
          20-episode greedy evaluations every 20 s) without stopping when solved
          (--budget.solved-return inf), 10 min at most. Per seed: env steps and minutes
          (perf/elapsed_s, interpolated at the env steps of the evaluated weights) at the first
          evaluation with mean return >= 475, and whether the next 5 evaluations all stay
          >= 475; the run is ended (SIGTERM, a clean stop) once those 5 are in.
          For comparison: cleanRL's dqn.py reaches CartPole-v1's 475 after ~220-270k env
          steps and ~80-100 s.
vec_dqn   the vec_dqn head alone (dqn loss weight 0, vec_dqn weight 1, actors and
          evaluation act with vec_dqn) at the default run's budget: 300k env steps,
          not stopping when solved, 10 min at most. Best, final, the return near every 50k
          env steps, and env steps to 475 if reached.
memory    examples/cue_recall_transformer.json vs examples/cue_recall_mlp.json as they
          are (5 min, stop at eval return 0.95): best and final greedy return per seed, mean.

A run directory that already holds a summary.json is not run again, only read: rerun the
command with the same --out to print the tables again. Runs are sequential on purpose (the
learner is CPU-bound; two runs at once would measure the machine, not the method).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOLVED, AFTER = 475.0, 5  # CartPole-v1's reward_threshold; evaluations that must stay above it
MEMORY_RECIPES = ("cue_recall_transformer", "cue_recall_mlp")


# --- reading a run --------------------------------------------------------------------------------
def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]  # the last may be half written


def minutes_at(rows: list[dict], env_steps: float) -> float | None:
    """Wall minutes of the run when it had ``env_steps``: perf/elapsed_s interpolated between
    the log lines around it (an evaluation's weights were taken between two lines)."""
    pts = sorted((r["perf/env_steps"], r["perf/elapsed_s"]) for r in rows if "perf/elapsed_s" in r)
    if not pts:
        return None
    i = bisect.bisect_left([s for s, _ in pts], env_steps)
    if i == 0 or i == len(pts):
        return pts[min(i, len(pts) - 1)][1] / 60
    (s0, t0), (s1, t1) = pts[i - 1], pts[i]
    return (t0 + (t1 - t0) * (env_steps - s0) / max(s1 - s0, 1)) / 60


def evaluations(rows: list[dict]) -> list[tuple[int, float]]:
    """(env steps of the evaluated weights, mean return) of each evaluation, in order."""
    return [(int(r["eval/env_steps"]), r["eval/return"]) for r in rows if "eval/return" in r]


def stability(rows: list[dict], target: float = SOLVED, after: int = AFTER) -> dict | None:
    """The first evaluation >= target and the ``after`` evaluations that followed it (fewer
    while the run goes on); None when none reached it."""
    evals = evaluations(rows)
    first = next((i for i, (_, ret) in enumerate(evals) if ret >= target), None)
    if first is None:
        return None
    steps, _ = evals[first]
    nxt = [ret for _, ret in evals[first + 1:first + 1 + after]]
    return {"env_steps": steps, "minutes": minutes_at(rows, steps), "next": nxt,
            "decided": len(nxt) == after, "stays": len(nxt) == after and min(nxt) >= target}


def returns_near(rows: list[dict], every: int = 50_000) -> list[tuple[int, float]]:
    """(mark, return of the last evaluation of weights taken at or before mark) every ``every`` steps."""
    evals = evaluations(rows)
    out, mark = [], every
    while evals and mark <= evals[-1][0]:
        out.append((mark, [ret for s, ret in evals if s <= mark][-1] if evals[0][0] <= mark else None))
        mark += every
    return out


def summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


# --- running --------------------------------------------------------------------------------------
def run_mouse(run_dir: Path, flags: list[str], cap_min: float, stop_when=None) -> dict | None:
    """One `mouse run` into ``run_dir`` (console to RUN_DIR.log), ended by its own budget
    (--budget.max-minutes ``cap_min``), by SIGTERM once ``stop_when(rows)`` holds, or, should
    it hang, killed 3 minutes after its cap. Returns its summary (None if it wrote none)."""
    if summary(run_dir) is not None:
        print(f"  {run_dir}: done before, read again", flush=True)
        return summary(run_dir)
    if run_dir.exists():
        raise SystemExit(f"error: {run_dir} holds an unfinished run; remove it or pick another --out")
    cmd = [sys.executable, "-m", "mouse", "run", "--run-dir", str(run_dir), "--wandb.mode", "disabled",
           *flags, *EXTRA_FLAGS, "--budget.max-minutes", str(cap_min)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    load0, t0, stopped = os.getloadavg()[0], time.monotonic(), False
    print(f"  {run_dir.name}: {' '.join(cmd[2:])}", flush=True)
    with open(f"{run_dir}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(2)
            waited = time.monotonic() - t0
            if not stopped and (stop_when is not None and stop_when(read_metrics(run_dir))
                                or waited > 60 * cap_min + 180):
                proc.send_signal(signal.SIGTERM)
                stopped = True
            elif waited > 60 * cap_min + 300:
                proc.kill()
    s = summary(run_dir)
    if s is not None:  # the machine's load, with the result (the 2 cores are shared)
        s["load"] = (load0, os.getloadavg()[0])
        (run_dir / "summary.json").write_text(json.dumps(s, indent=2))
    print(f"  {run_dir.name}: exit {proc.returncode} after {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    return s


EXTRA_FLAGS: list[str] = []  # --flags: added to every run's (a tuning experiment)


def seed_flags(seed: int) -> list[str]:
    return ["--actor.seed", str(seed), "--learner.seed", str(seed), "--replay.seed", str(seed)]


# --- tables ---------------------------------------------------------------------------------------
def table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells)


def fmt(x, spec="{:,.0f}"):
    return None if x is None else spec.format(x)


def load(s: dict | None) -> str | None:
    return None if s is None or "load" not in s else "{:.1f}-{:.1f}".format(*s["load"])


def cartpole_table(runs: list[tuple[int, list[dict], dict | None]]) -> str:
    rows, steps, mins = [], [], []
    for seed, metrics, s in runs:
        st = stability(metrics)
        if st is None:
            rows.append([seed, "not reached", None, None, None, s and s["stop_reason"], load(s)])
            continue
        steps.append(st["env_steps"])
        mins.append(st["minutes"])
        stays = "yes" if st["stays"] else "no" if st["decided"] else f"({len(st['next'])} evals only)"
        rows.append([seed, fmt(st["env_steps"]), fmt(st["minutes"], "{:.2f}"),
                     " ".join(f"{r:.0f}" for r in st["next"]), stays, s and s["stop_reason"], load(s)])
    if steps:
        kept = sum(1 for r in rows if r[4] == "yes")
        rows.append(["median", fmt(statistics.median(steps)), fmt(statistics.median(mins), "{:.2f}"),
                     None, f"{kept}/{len(runs)}", None, None])
    return table(["seed", f"env steps @ first eval>={SOLVED:.0f}", "min", f"next {AFTER} evals",
                  "all stay", "stopped by", "load"], rows)


def curve_table(runs: list[tuple[int, list[dict], dict | None]]) -> str:
    rows = []
    for seed, metrics, s in runs:
        st = stability(metrics, after=0)
        near = " ".join(f"{m // 1000}k:{'-' if r is None else f'{r:.0f}'}" for m, r in returns_near(metrics))
        rows.append([seed, len(evaluations(metrics)), fmt(s and s["best_eval_return"], "{:.1f}"),
                     fmt(s and s["final_eval_return"], "{:.1f}"), fmt(st and st["env_steps"]),
                     fmt(s and s["env_steps"]), near, s and s["stop_reason"], load(s)])
    return table(["seed", "evals", "best", "final", f"env steps to {SOLVED:.0f}", "env steps", "return near",
                  "stopped by", "load"], rows)


def memory_table(runs: dict[str, list[tuple[int, list[dict], dict | None]]]) -> str:
    rows = []
    for name, per_seed in runs.items():
        done = [s for _, _, s in per_seed if s is not None]
        for seed, _, s in per_seed:
            solved = s and s["solved_at"] and "{:,} steps, {:.1f} min".format(s["solved_at"][0], s["solved_at"][2])
            rows.append([name, seed, fmt(s and s["best_eval_return"], "{:.2f}"),
                         fmt(s and s["final_eval_return"], "{:.2f}"), solved or None,
                         fmt(s and s["env_steps"]), fmt(s and s["wall_minutes"], "{:.1f}"), load(s)])
        if done:
            rows.append([name, "mean", fmt(statistics.mean(s["best_eval_return"] for s in done), "{:.2f}"),
                         fmt(statistics.mean(s["final_eval_return"] for s in done), "{:.2f}"),
                         None, None, None, None])
    return table(["recipe", "seed", "best", "final", "solved (>=0.95) at", "env steps", "min", "load"], rows)


# --- studies --------------------------------------------------------------------------------------
def study_cartpole(out: Path, seeds: int) -> str:
    runs = []
    for seed in range(seeds):
        d = out / f"cartpole-s{seed}"
        flags = ["--config", "examples/cartpole.json", "--eval.episodes", "20", "--budget.solved-return", "inf",
                 "--budget.max-env-steps", "0", *seed_flags(seed)]
        s = run_mouse(d, flags, cap_min=10, stop_when=lambda rows: (stability(rows) or {}).get("decided", False))
        runs.append((seed, read_metrics(d), s))
    return ("cartpole: CartPole-v1, default run, 20-episode greedy evaluations every 20 s; "
            "cleanRL dqn.py: ~220-270k env steps, ~80-100 s\n" + cartpole_table(runs))


def study_vec_dqn(out: Path, seeds: int) -> str:
    runs = []
    for seed in range(seeds):
        d = out / f"vec_dqn-s{seed}"
        flags = ["--config", "examples/cartpole.json", "--train.dqn.weight", "0", "--train.vec-dqn.weight", "1",
                 "--actor.policy", "vec_dqn", "--budget.solved-return", "inf", "--budget.max-env-steps",
                 "300000", *seed_flags(seed)]
        s = run_mouse(d, flags, cap_min=10)
        runs.append((seed, read_metrics(d), s))
    return "vec_dqn: the vec_dqn head alone on CartPole-v1, 300k env steps or 10 min\n" + curve_table(runs)


def study_memory(out: Path, seeds: int) -> str:
    runs: dict[str, list] = {name: [] for name in MEMORY_RECIPES}
    for seed in range(seeds):  # the two recipes alternate, so a change of load hits both
        for name in MEMORY_RECIPES:
            d = out / f"{name}-s{seed}"
            s = run_mouse(d, ["--config", f"examples/{name}.json", *seed_flags(seed)], cap_min=5)
            runs[name].append((seed, read_metrics(d), s))
    return "memory: mouse/CueRecall-v0, the two recipes as they are (5 min, stop at 0.95)\n" + memory_table(runs)


STUDIES = {"cartpole": study_cartpole, "vec_dqn": study_vec_dqn, "memory": study_memory}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", action="append", choices=sorted(STUDIES), required=True)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per configuration")
    p.add_argument("--out", type=Path, default=Path("/tmp") / time.strftime("mouse-learning-%Y%m%d-%H%M%S"),
                   help="where the run directories go (RUN_DIR and RUN_DIR.log per run)")
    p.add_argument("--flags", default="", help="more `mouse run` flags for every run, in one string "
                   "(e.g. --flags='--train.lr 2.5e-4'); they come after each study's own")
    a = p.parse_args()
    EXTRA_FLAGS[:] = shlex.split(a.flags)
    a.out.mkdir(parents=True, exist_ok=True)
    print(f"run directories under {a.out}", flush=True)
    tables = [STUDIES[name](a.out.resolve(), a.seeds) for name in a.study]
    if EXTRA_FLAGS:
        print(f"every run with {' '.join(EXTRA_FLAGS)}")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
