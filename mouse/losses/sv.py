"""Supervised value loss: regress the ``sv`` head onto the ``q_star`` annotation.

Per step and action (not per transition). Only finite q_star entries of real
(valid) steps participate, and only allowed actions when the records carry an
``action_mask``; -inf padding never contributes a value or a gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mouse.losses.common import (
    detached,
    masked_mean,
    metrics_dict,
    optional_action_mask,
    q_star_target,
    step_mask,
)
from mouse.losses.config import SV_LOSS_TYPES as LOSS_TYPES, SvLossConfig  # noqa: F401 (re-exported)

WHO = "sv_loss"


def sv_loss(step_stream, values: Tensor, cfg: SvLossConfig) -> tuple[Tensor, dict[str, float]]:
    """MSE or MAE of ``values`` [B, S, A] (``out["sv"]``) against ``q_star`` [B, S, A].

    The mean is over participating entries (finite q_star, valid step, allowed
    action). Metric: sv_loss (the returned loss).
    """
    loss, metrics = sv_loss_tensors(step_stream, values, cfg)
    return loss, metrics_dict(metrics)


def sv_loss_tensors(step_stream, values: Tensor,
                    cfg: SvLossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """``sv_loss`` with its metrics left as detached 0-dim tensors on the device (no host
    sync): the training path sums them there and reads them once per log interval."""
    q_star = q_star_target(step_stream, values, "values (out['sv'])", WHO)
    B, S, A = q_star.shape
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
    return loss, detached({"sv_loss": loss})
