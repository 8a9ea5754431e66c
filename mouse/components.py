"""Building the run's components from its config (shared by learner, actors and tests)."""

from __future__ import annotations

from functools import partial

import torch

from mouse.config import RunConfig
from mouse.envs import EnvInfo
from mouse.models import MouseModel, heads_for
from mouse.replay import PrefetchBatchifier, make_replay_buffer


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


def make_replay(cfg: RunConfig, spec):
    """The replay buffer and its insert function for chunks from ``wire.decode`` (validated there)."""
    rb = make_replay_buffer(cfg.replay, spec, seq_len=cfg.train.seq_len)
    return rb, partial(rb.ingest, checked=True)


def make_batchifier(cfg: RunConfig, replay, device: torch.device) -> PrefetchBatchifier:
    return PrefetchBatchifier(replay, batch_size=cfg.train.batch_size, seq_len=cfg.train.seq_len,
                              prefetch=cfg.learner.prefetch, num_workers=cfg.learner.batch_workers,
                              device=device, pin_memory=device.type == "cuda")
