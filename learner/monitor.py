"""Monitoring: Weights & Biases (offline unless a key is configured), RUN_DIR/metrics.jsonl and a
console view.

metrics.jsonl has one JSON object per ``log`` call: ``step`` (updates), ``time``
(unix seconds) and every metric of that call; ``mouse plot`` reads it. It is
appended to (a resumed run continues the file) and flushed on every line.

The console shows one line per log interval with the values logged in that
interval only: a value that did not change hands (no episode finished, no
evaluation ended) is left out rather than repeated, and an evaluation appears
once, on the line after it finished, with the env steps its weights were taken at.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from mouse.config import RunConfig, WandbConfig

from .wandb_run import WandbRun, summary_values

log = logging.getLogger("mouse.monitor")

METRICS_FILE = "metrics.jsonl"

# the headline numbers shown on the console, in order
HEADLINE = (
    ("perf/env_steps", "env steps", "{:,.0f}"),
    ("perf/updates", "updates", "{:,.0f}"),
    ("perf/env_steps_per_s", "steps/s", "{:,.0f}"),
    ("perf/updates_per_s", "updates/s", "{:.1f}"),
    ("episode/return", "return", "{:.1f}"),
    ("eval/return", "eval return", "{:.1f}"),
    ("loss/total", "loss", "{:.4f}"),
    ("replay/size", "replay", "{:,.0f}"),
    ("actors/connected", "actors", "{:.0f}"),
    ("actors/policy_lag", "lag", "{:.1f}"),
    ("perf/batch_wait_fraction", "batch wait", "{:.1%}"),
)


def wandb_mode(cfg: WandbConfig) -> str:
    if cfg.mode != "auto":
        return cfg.mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def headline(values: dict[str, float]) -> list[tuple[str, str]]:
    """(label, text) of the headline metrics present in ``values``, in HEADLINE order."""
    rows = []
    for key, label, fmt in HEADLINE:
        if key not in values:
            continue
        text = fmt.format(values[key])
        if key == "eval/return" and "eval/env_steps" in values:
            text += f" @ {values['eval/env_steps']:,.0f} steps"
        rows.append((label, text))
    rejected = sum(v for k, v in values.items() if k.startswith("wire/rejected/"))
    if rejected:
        rows.append(("rejected", f"{rejected:.0f}"))
    return rows


def say(text: str) -> None:
    """Print a console line. A closed stdout (the pipe's reader left: ``| head``, a dead tmux or
    log collector) silences the console, never the run: stdout then goes to /dev/null, so this
    and the interpreter's last flush succeed; the run's files still say everything."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


class Monitor:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.mode = wandb_mode(cfg.wandb)
        self.fresh: dict[str, float] = {}  # logged since the last console line
        self.metrics_file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")
        self._write_failing = False
        self.wandb = WandbRun(cfg, self.run_dir, self.mode) if self.mode != "disabled" else None
        self.live = None
        if sys.stdout.isatty():  # a table refreshed in place; plain lines when piped or logged
            from rich.live import Live

            self.live = Live(self._table([]), refresh_per_second=2, transient=False)
            self.live.start()

    @property
    def files_dir(self) -> str | None:
        return None if self.wandb is None else self.wandb.files_dir

    def log(self, metrics: dict[str, float], step: int) -> None:
        """To metrics.jsonl and W&B now; to the console with the next ``console()``."""
        self.fresh.update(metrics)
        # one short line per log interval: cheap, and flushed so a crash loses nothing before it
        try:  # a full disk costs lines here (kept buffered while they fit), never the run
            self.metrics_file.write(json.dumps({"step": step, "time": time.time(), **metrics}, default=float) + "\n")
            self.metrics_file.flush()
        except OSError as e:
            if not self._write_failing:
                log.warning("%s not written: %s", self.metrics_file.name, e)
            self._write_failing = True
        else:
            self._write_failing = False
        if self.wandb is not None:
            self.wandb.log(metrics, step)

    def console(self) -> None:
        """One line (or the live table) of what was logged since the last call."""
        rows = headline(self.fresh)
        self.fresh = {}
        if self.live is not None:
            self.live.update(self._table(rows))
        elif rows:
            say(time.strftime("%H:%M:%S ") + " | ".join(f"{label} {value}" for label, value in rows))

    def _table(self, rows):
        from rich.table import Table

        table = Table(title=f"mouse · {self.run_dir}", show_header=False)
        for label, value in rows:
            table.add_row(label, value)
        return table

    def summary(self, values: dict) -> None:
        """The run's summary (``Learner``'s summary dict): its numbers, and solved_at spelled out."""
        if self.wandb is not None:
            self.wandb.summary(summary_values(values))

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # still full: the buffered lines are lost, the file closed
            self.metrics_file.close()
        if self.live is not None:
            self.live.stop()
            self.live = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


class Rates:
    """Env steps/s and updates/s, both over the same span: the last ``window_s`` seconds (at
    least one log interval), counted from this process's start, so a resumed run's totals
    never enter a rate. Records arrive in bursts (an actor's credits, backpressure), so a
    window of a few bursts reads steadily where one log interval would swing between 0 and
    twice the rate."""

    def __init__(self, env_steps: int, updates: int, window_s: float = 30.0, clock=time.monotonic):
        self.clock, self.window_s = clock, window_s
        self.marks = collections.deque([(clock(), env_steps, updates)])

    def take(self, env_steps: int, updates: int) -> tuple[float, float]:
        now = self.clock()
        while len(self.marks) > 1 and self.marks[1][0] <= now - self.window_s:
            self.marks.popleft()  # marks[0]: the newest mark at least window_s old (or the first)
        t0, s0, u0 = self.marks[0]
        self.marks.append((now, env_steps, updates))
        dt = max(now - t0, 1e-9)
        return (env_steps - s0) / dt, (updates - u0) / dt


class ActorWatch:
    """Which actors the ingest thread counts as connected, and which came or went since last time.

    Reads the ingest server's public state only: ``lock``, ``actors`` (id -> state with
    ``last_seen``) and ``actor_timeout_s``.
    """

    def __init__(self):
        self.connected: set[int] = set()

    def update(self, ingest, now: float | None = None) -> tuple[list[int], list[int]]:
        """(joined, lost) actor ids since the last call."""
        now = time.monotonic() if now is None else now
        with ingest.lock:
            live = {a.actor_id for a in ingest.actors.values()
                    if now - a.last_seen < ingest.actor_timeout_s}
        joined, lost = sorted(live - self.connected), sorted(self.connected - live)
        self.connected = live
        return joined, lost
