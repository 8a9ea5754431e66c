"""Building the model from a run's config (the learner, the actors and tests build the same one)."""

from __future__ import annotations

import torch

from mouse.config import RunConfig
from mouse.envs import EnvInfo
from mouse.models import MouseModel, heads_for


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"learner.device={name!r} but CUDA is not available; use auto or cpu")
    return device


def build_model(cfg: RunConfig, info: EnvInfo) -> MouseModel:
    heads = heads_for(cfg.train, cfg.actor.policy)
    return MouseModel(cfg.model, info.spec, heads, num_obs_states=info.spec.num_obs_states)
