"""Checkpoints: model (online and target heads), optimizer, counters and config.

Written atomically (temp file, then rename) and read with ``weights_only=True``
so a checkpoint can never run code when loaded. The layout (keys and what they
hold) is in the README, "What a run writes".
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mouse.config import RunConfig, to_dict


def save_checkpoint(path: Path, model, optimizer, cfg: RunConfig, **counters) -> None:
    """``optimizer`` None leaves it out (best.pt: weights to use, not to resume training from)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    state = {"model": model.state_dict(), "config": to_dict(cfg), **counters}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)
