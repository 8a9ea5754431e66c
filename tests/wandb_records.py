"""What one W&B offline run file holds, for tests: rows, summary, metric definitions, and
waiting for the file's tail (learner.wandb_files reads the records)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from learner.wandb_files import records, run_files

__all__ = ["records", "run_files", "rows", "summary", "definitions", "run_record", "wait_finished"]


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def rows(path: Path) -> list[dict]:
    """The logged rows of one .wandb file."""
    return [_items(r.history.item) for r in records(path) if r.WhichOneof("record_type") == "history"]


def summary(path: Path) -> dict:
    """The summary of one .wandb file (its summary records merged in order)."""
    out = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "summary":
            out.update(_items(r.summary.update))
    return out


def definitions(path: Path) -> dict:
    """{metric name or glob: its MetricRecord} of one .wandb file (the last definition wins)."""
    return {r.metric.name or r.metric.glob_name: r.metric
            for r in records(path) if r.WhichOneof("record_type") == "metric"}


def run_record(path: Path):
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")


def finished(path: Path) -> bool:
    return any(r.WhichOneof("record_type") == "exit" for r in records(path))


def wait_finished(path: Path, timeout: float = 30.0) -> bool:
    """Whether the file has its exit record, waiting for it up to ``timeout`` seconds (W&B's
    service may still be writing the file's tail when ``finish()`` has returned)."""
    deadline = time.monotonic() + timeout
    while not finished(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
