"""`mouse plot RUN_DIR [RUN_DIR ...] [--out DIR]`: learning curves as PNG files.

Reads each run's ``metrics.jsonl`` (written by ``learner.monitor.Monitor``), or
its offline W&B files when a run has none, and writes, with the runs overlaid:

    returns.png     evaluation and training (actor episode) return vs env steps and vs wall time
    losses.png      the loss metrics vs updates
    throughput.png  env steps/s, updates/s, policy lag and batch wait vs wall time

matplotlib is an optional extra (``pip install 'mouse[plot]'``), imported only here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .monitor import METRICS_FILE

# (title, y key, x key): x is a metric key, "step" (updates) or "minutes" (wall time since the first row)
RETURNS = (
    ("evaluation return vs env steps", "eval/return", "eval/env_steps"),
    ("evaluation return vs wall time", "eval/return", "minutes"),
    ("training episode return vs env steps", "episode/return", "perf/env_steps"),
    ("training episode return vs wall time", "episode/return", "minutes"),
)
LOSSES = ("loss/total", "loss/grad_norm", "loss/dqn/dqn_loss", "loss/dqn/q_values_mean",
          "loss/dqn/cql_penalty", "loss/vec_dqn/vec_dqn_loss", "loss/sp/sp_loss", "loss/sv/sv_loss")
THROUGHPUT = (
    ("env steps/s", "perf/env_steps_per_s", "minutes"),
    ("updates/s", "perf/updates_per_s", "minutes"),
    ("policy lag (weight versions)", "actors/policy_lag", "minutes"),
    ("batch wait fraction", "perf/batch_wait_fraction", "minutes"),
)
X_LABELS = {"step": "updates", "minutes": "wall time (min)", "eval/env_steps": "env steps",
            "perf/env_steps": "env steps"}


def load_metrics(run_dir: Path) -> list[dict]:
    """The rows a run logged: metrics.jsonl, else its offline W&B history (step and time renamed)."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if path.exists():
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash: the rest is still good
                continue
        return rows
    if not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} does not exist")
    from .wandb_files import history

    try:
        rows = history(run_dir)
    except ValueError:
        raise ValueError(f"{run_dir} has neither {METRICS_FILE} nor offline W&B run files") from None
    return [{**r, "step": r.get("_step"), "time": r.get("_timestamp")} for r in rows]


def series(rows: list[dict], y: str, x: str) -> tuple[list[float], list[float]]:
    """(xs, ys) of the rows that have both, finite; x "minutes" is wall time since the first row."""
    t0 = next((r["time"] for r in rows if r.get("time") is not None), 0.0)
    xs, ys = [], []
    for r in rows:
        xv = (r["time"] - t0) / 60 if x == "minutes" and r.get("time") is not None else r.get(x)
        yv = r.get(y)
        if isinstance(xv, (int, float)) and isinstance(yv, (int, float)) and \
                math.isfinite(xv) and math.isfinite(yv):
            xs.append(float(xv))
            ys.append(float(yv))
    return xs, ys


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Each run's directory name, or its whole path where two names are the same."""
    names = [Path(d).name for d in run_dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, run_dirs)]


def _figure(panels, runs, path: Path, plt) -> Path | None:
    """One PNG of ``panels`` (title, y, x) with every run overlaid; None when no run has any of them."""
    panels = [p for p in panels if any(series(rows, p[1], p[2])[0] for _, rows in runs)]
    if not panels:
        return None
    cols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.4 * cols, 3.8 * nrows), squeeze=False)
    for ax, (title, y, x) in zip(axes.flat, panels):
        for label, rows in runs:
            xs, ys = series(rows, y, x)
            if xs:
                ax.plot(xs, ys, label=label, marker="o" if len(xs) < 20 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel(X_LABELS.get(x, x))
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_runs(run_dirs: list[str | Path], out: str | Path = "") -> list[Path]:
    """Write the PNG files for ``run_dirs`` into ``out`` (default RUN_DIR/plots for one run,
    ./plots for several); returns the paths written."""
    if not run_dirs:
        raise ValueError("mouse plot needs at least one run directory")
    try:
        import matplotlib
    except ImportError:
        raise ValueError("mouse plot needs matplotlib: pip install 'mouse[plot]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    dirs = [Path(d) for d in run_dirs]
    runs = list(zip(run_labels(dirs), [load_metrics(d) for d in dirs]))
    out_dir = Path(out) if out else (dirs[0] / "plots" if len(dirs) == 1 else Path("plots"))
    out_dir.mkdir(parents=True, exist_ok=True)
    losses = tuple((k.removeprefix("loss/"), k, "step") for k in LOSSES)
    written = [_figure(RETURNS, runs, out_dir / "returns.png", plt),
               _figure(losses, runs, out_dir / "losses.png", plt),
               _figure(THROUGHPUT, runs, out_dir / "throughput.png", plt)]
    return [p for p in written if p is not None]
