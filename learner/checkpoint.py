"""Checkpoints: model (online and target heads), optimizer, counters and config.

Two files live side by side: ``checkpoint.pt`` (the newest) and
``checkpoint.prev.pt`` (the one before). A save writes the new checkpoint
under a staging name and fsyncs it; only then does the current one become the
previous one (a hard link, so ``checkpoint.pt`` never goes missing; a rename
where the filesystem has no hard links) and the new one take its name; the
directory is fsynced last (``mouse.durable``). A kill at any point leaves at
least one whole checkpoint under one of the two names.

``resume`` loads the newest usable one: a file that is truncated, empty, not a
weights-only torch file, missing entries or holding a model of another shape is
reported in one line and the previous one is used; the bad file is renamed
``checkpoint.pt.corrupt-TIMESTAMP`` so no later save overwrites it. When none
is usable, ``CheckpointError`` (a ``ValueError``: one line at the command, exit
1) and nothing on disk changes. Every read is ``torch.load(weights_only=True)``,
so a checkpoint can never run code when loaded. ``restore_replay`` then brings
back the replay state the checkpoint names (``replay_written``). The layout (keys
and what they hold) is in the README, "What a run writes".
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import time
import warnings
from pathlib import Path

import torch

from mouse.config import RunConfig, to_dict
from mouse.durable import save_durably
from mouse.replay.buffer import UnreadableReplay

log = logging.getLogger("mouse.learner")

COUNTERS = ("version", "updates", "env_steps")
"""The integer counters every checkpoint holds (``save_checkpoint`` may add more)."""


MODEL_MISMATCH = "its model does not match this run's config"


class CheckpointError(ValueError):
    """No usable checkpoint in a run directory that has checkpoint files."""


def previous_path(path: Path) -> Path:
    """checkpoint.pt -> checkpoint.prev.pt"""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def exists(path: Path) -> bool:
    """A checkpoint to resume from is there (the newest or, after a crash mid-rotation, the previous)."""
    return Path(path).exists() or previous_path(path).exists()


def save_checkpoint(path: Path, model, optimizer, cfg: RunConfig, *, keep_previous: bool = True,
                    **counters) -> None:
    """Write a checkpoint to ``path``, keeping the one there as ``previous_path(path)`` (unless
    not ``keep_previous``). ``optimizer`` None leaves it out (best.pt: weights to use, not to
    resume training from).

    Raises ``OSError`` when the disk refuses (full, read-only): the existing files are then
    as they were, and the staged file is removed."""
    path = Path(path)
    state = {"model": model.state_dict(), "config": to_dict(cfg), **counters}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()

    def rotate():  # only once the new one is whole on disk
        if path.exists():
            _keep_as_previous(path)

    save_durably(state, path, before_replace=rotate if keep_previous else None)


def _keep_as_previous(path: Path) -> None:
    prev = previous_path(path)
    link = prev.with_name(prev.name + ".new")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:  # no hard links on this filesystem: path is missing until the new one lands
        os.replace(path, prev)
        return
    os.replace(link, prev)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def resume(path: Path, model, optimizer) -> tuple[dict, Path] | None:
    """Load the newest usable checkpoint at ``path`` (else its previous one) into ``model`` and
    ``optimizer``; returns (its contents, its path), or None when there is no checkpoint file."""
    path = Path(path)
    bad: list[tuple[Path, str]] = []
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            with warnings.catch_warnings():  # torch warns about odd files; the line below says it all
                warnings.simplefilter("ignore")
                state = load_checkpoint(candidate)
            _load_into(state, model, optimizer)
        except Exception as e:  # whatever a damaged file raises: it is reported and skipped
            bad.append((candidate, _why(candidate, e)))
            continue
        if candidate != path:
            problem = "is missing" if not bad else f"is unreadable ({bad[0][1]})"
            log.warning("%s %s; resuming from %s (%d updates)", path.name, problem, candidate.name,
                        state["updates"])
            for file, _ in bad:  # kept for inspection, out of the way of the next save
                file.rename(file.with_name(f"{file.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"))
        return state, candidate
    if not bad:
        return None
    hint = "; resume with the run's own config.json or use a new --run-dir" if any(
        why.startswith(MODEL_MISMATCH) for _, why in bad) else ""
    raise CheckpointError(f"no usable checkpoint in {path.parent}: " + "; ".join(
        f"{file.name} is unreadable ({why})" for file, why in bad) + f" (the files are left as they are{hint})")


def restore_replay(replay, directory: Path, written: int | None) -> int | None:
    """Restore the replay state the checkpoint names (``written``: saved just before it); when that
    one is gone or damaged, the newest that loads, with a warning. When none loads the directory
    is set aside as ``replay.corrupt-TIMESTAMP`` and the replay stays empty: data is lost, not
    the run. Returns the restored state's ``written`` (None: nothing restored)."""
    try:
        restored = replay.restore(directory, written)
    except UnreadableReplay as e:
        aside = directory.with_name(f"{directory.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        directory.rename(aside)
        log.warning("%s; starting with an empty replay (moved to %s)", e, aside.name)
        return None
    if written is not None and restored != written:
        log.warning("the checkpoint was saved with the replay after %d steps written, restored "
                    "the one after %d (the other is gone or damaged)", written, restored)
    log.info("restored %d replay steps from %s", len(replay), directory)
    return restored


def _load_into(state, model, optimizer) -> None:
    """Check ``state`` is a checkpoint of this model, then load it (ValueError naming what is wrong)."""
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a checkpoint")
    missing = [k for k in ("model", "optimizer", *COUNTERS) if k not in state]
    if missing:
        raise ValueError(f"no {', '.join(missing)} entr{'y' if len(missing) == 1 else 'ies'}: "
                         "not a mouse checkpoint")
    if not all(isinstance(state[k], int) for k in COUNTERS):
        raise ValueError(f"counters {[state[k] for k in COUNTERS]} are not integers")
    mismatch = _model_mismatch(model.state_dict(), state["model"])
    if mismatch:
        raise ValueError(f"{MODEL_MISMATCH}: {mismatch}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])


def _model_mismatch(ours: dict, theirs: dict) -> str:
    """What differs between two state dicts (keys and shapes), briefly; '' when they match."""
    if not isinstance(theirs, dict):
        return f"the model entry is a {type(theirs).__name__}"
    problems = [f"{k}: {list(theirs[k].shape)} in the file, {list(v.shape)} here"
                for k, v in ours.items() if k in theirs and getattr(theirs[k], "shape", None) != v.shape]
    if missing := sorted(ours.keys() - theirs.keys()):
        problems.append(f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    if extra := sorted(theirs.keys() - ours.keys()):
        problems.append(f"unknown {extra[0]}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else ""))
    return "; ".join(problems[:2]) + (f" (+{len(problems) - 2} more)" if len(problems) > 2 else "")


def _why(path: Path, error: Exception) -> str:
    """One short line on why ``path`` could not be used (torch's own messages run to a page)."""
    with contextlib.suppress(OSError), open(path, "rb") as f:
        head = f.read(4)
        if not head:
            return "empty file"
        if head != b"PK\x03\x04":  # every torch.save since torch 1.6 writes a zip archive
            return "not a torch checkpoint (no zip archive)"
    if isinstance(error, pickle.UnpicklingError):  # torch's text suggests weights_only=False: never
        details = [line.strip().removeprefix("WeightsUnpickler error: ").split(". ")[0].rstrip(".")
                   for line in str(error).splitlines()
                   if line.strip() and not re.search(r"weights.only|file an issue|documentation", line, re.I)]
        return "not a weights-only torch file" + (f": {details[0]}" if details else "")
    text = str(error).split("\n")[0].split(". ")[0]
    if "PytorchStreamReader" in text:
        return f"truncated or damaged ({text})"
    text = text if len(text) <= 200 else text[:197] + "..."
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"
