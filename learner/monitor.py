"""Monitoring: Weights & Biases (offline unless a key is configured), RUN_DIR/metrics.jsonl and a
console view.

metrics.jsonl has one JSON object per ``log`` call: ``step`` (updates), ``time``
(unix seconds) and every metric of that call; ``mouse plot`` reads it. It is
appended to (a resumed run continues the file) and flushed on every line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from mouse.config import RunConfig, WandbConfig, to_dict

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


class Monitor:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.mode = wandb_mode(cfg.wandb)
        self.run = None
        self.last: dict[str, float] = {}
        self.metrics_file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")
        if self.mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity or None,
                name=cfg.wandb.run_name or self.run_dir.name,
                tags=list(cfg.wandb.tags),
                config=to_dict(cfg),
                dir=str(self.run_dir),
                mode=self.mode,
                settings=wandb.Settings(console="off", x_disable_stats=True),
            )
        self.live = None
        if sys.stdout.isatty():  # a table refreshed in place; plain lines when piped or logged
            from rich.live import Live

            self.live = Live(self._table(), refresh_per_second=2, transient=False)
            self.live.start()

    @property
    def files_dir(self) -> str | None:
        return None if self.run is None else str(Path(self.run.dir).parent)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.last.update(metrics)
        # one short line per log interval: cheap, and flushed so a crash loses nothing before it
        self.metrics_file.write(json.dumps({"step": step, "time": time.time(), **metrics}, default=float) + "\n")
        self.metrics_file.flush()
        if self.run is not None:
            self.run.log(metrics, step=step)
        self._console()

    def _headline(self) -> list[tuple[str, str]]:
        rows = [(label, fmt.format(self.last[k])) for k, label, fmt in HEADLINE if k in self.last]
        rejected = sum(v for k, v in self.last.items() if k.startswith("wire/rejected/"))
        if rejected:
            rows.append(("rejected", f"{rejected:.0f}"))
        return rows

    def _table(self):
        from rich.table import Table

        table = Table(title=f"mouse · {self.run_dir}", show_header=False)
        for label, value in self._headline():
            table.add_row(label, value)
        return table

    def _console(self) -> None:
        if self.live is not None:
            self.live.update(self._table())
        else:
            print(" | ".join(f"{label} {value}" for label, value in self._headline()), flush=True)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self) -> None:
        self.metrics_file.close()
        if self.live is not None:
            self.live.stop()
            self.live = None
        if self.run is not None:
            self.run.finish()
            self.run = None
