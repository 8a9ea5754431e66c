"""A run directory's config is the run's config: what a resume may change, and its record.

A learner started on a run directory that holds a run (a checkpoint, with the
run's ``config.json`` beside it) continues that run. Settings that shape the
model, the data or the env cannot change then (the checkpoint and the replay
were made with them); settings of the learner process and its budget, logging
and evaluation can, and each start appends what it changed to
``RUN_DIR/config-history.jsonl``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from mouse.config import RunConfig, from_dict, load_config, to_dict

# top-level config sections (and fields) a resumed run may change
RESUMABLE = ("budget", "eval", "wandb", "learner", "num_actors", "run_dir")
HISTORY_FILE = "config-history.jsonl"


def saved_config(run_dir: Path) -> RunConfig | None:
    """The config of the run in ``run_dir``; None when it holds none to continue (no checkpoint:
    whatever a start left there before its first checkpoint depends on no setting)."""
    from . import checkpoint

    run_dir = Path(run_dir)
    if not checkpoint.exists(run_dir / "checkpoint.pt"):
        return None
    if (run_dir / "config.json").is_file():
        return load_config(run_dir / "config.json")
    for path in (run_dir / "checkpoint.pt", checkpoint.previous_path(run_dir / "checkpoint.pt")):
        try:  # a run from before config.json was written
            return from_dict(RunConfig, checkpoint.load_checkpoint(path)["config"])
        except Exception:  # damaged: the learner's resume says which file and why, in one line
            continue
    return None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def config_changes(saved: RunConfig, cfg: RunConfig) -> dict[str, tuple]:
    """{dotted field: (saved value, new value)} for every field that differs."""
    old, new = _flat(to_dict(saved)), _flat(to_dict(cfg))
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if not _same(old.get(k), new.get(k))}


def refuse_changes(run_dir: Path, saved: RunConfig, cfg: RunConfig) -> None:
    """One clear line when ``cfg`` would change what the run in ``run_dir`` was made with."""
    refused = {k: v for k, v in config_changes(saved, cfg).items()
               if k.split(".")[0] not in RESUMABLE}
    if not refused:
        return
    shown = "; ".join(f"{k} is {o!r} there, {n!r} here" for k, (o, n) in list(refused.items())[:3])
    more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
    raise ValueError(
        f"{run_dir} holds a run made with other settings: {shown}{more}. A resumed run keeps its "
        f"model, env, training and actor settings (only {', '.join(RESUMABLE[:-1])} may change): "
        "drop those flags, or start a new run with another --run-dir")


def record_start(run_dir: Path, saved: RunConfig | None, cfg: RunConfig) -> None:
    """Append this start to RUN_DIR/config-history.jsonl: when, and what it changed."""
    changes = {} if saved is None else config_changes(saved, cfg)
    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resume": saved is not None,
             "changed": {k: [o, n] for k, (o, n) in changes.items() if k != "run_dir"}}
    with open(Path(run_dir) / HISTORY_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")
