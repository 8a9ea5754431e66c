"""Supervised value loss: regress the ``sv`` head onto the ``q_star`` annotation.

Per step and action (not per transition). Only finite q_star entries of real
(valid) steps participate, and only allowed actions when the records carry an
``action_mask``; -inf padding never contributes a value or a gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mouse.losses.common import (
    check_shape,
    masked_mean,
    metrics_dict,
    optional_action_mask,
    require_keys,
    step_mask,
    window_shape,
)

WHO = "sv_loss"
LOSS_TYPES = ("mse", "mae")


@dataclass(frozen=True)
class SvLossConfig:
    weight: float = 1.0  # multiplier of this loss in the learner's total (0 disables it)
    loss_type: str = "mse"  # "mse" (squared error) or "mae" (absolute error)

    def __post_init__(self):
        if not self.weight >= 0:
            raise ValueError(f"SvLossConfig.weight must be >= 0 (0 disables the loss), got {self.weight}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"SvLossConfig.loss_type must be one of {LOSS_TYPES}, "
                             f"got {self.loss_type!r}")


def sv_loss(step_stream, values: Tensor, cfg: SvLossConfig) -> tuple[Tensor, dict[str, float]]:
    """MSE or MAE of ``values`` [B, S, A] (``out["sv"]``) against ``q_star`` [B, S, A].

    The mean is over participating entries (finite q_star, valid step, allowed
    action). Metric: sv_loss (the returned loss).
    """
    B, S = window_shape(step_stream, WHO)
    require_keys(step_stream, ["q_star"], WHO, "step_stream",
                 "sv needs q_star annotations: enable q_star on the actors (envs with a known model)")
    q_star = step_stream["q_star"]
    if q_star.dim() != 3:
        raise ValueError(f"{WHO}: step_stream['q_star'] must be [B, S, A], got {tuple(q_star.shape)}")
    A = q_star.shape[-1]
    check_shape(values, (B, S, A), "values (out['sv'])", WHO, "[B, S, A] (like q_star)")
    mask = torch.isfinite(q_star) & step_mask(step_stream)[..., None]  # [B, S, A]
    amask = optional_action_mask(step_stream, (B, S, A), WHO)
    if amask is not None:
        mask = mask & amask
    # replace -inf targets before subtracting: (v + inf)**2 is inf, and its backward
    # (0 from the mask times inf) would put NaN into the gradient of ``values``
    target = torch.where(mask, q_star, torch.zeros_like(q_star)).detach()  # [B, S, A]
    err = values - target  # [B, S, A]
    per_entry = err ** 2 if cfg.loss_type == "mse" else err.abs()
    loss = masked_mean(per_entry, mask)
    return loss, metrics_dict({"sv_loss": loss})
