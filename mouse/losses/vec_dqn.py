"""Vector DQN: each action is a direction in R^D; the reward is a rotation angle.

The loss pulls the online vector of the executed action towards the greedy
target vector at the next state, rotated (RoPE-style, every coordinate pair by
the same angle) by ``theta = r * reward_scale + reward_shift``. Greedy means the
action whose direction is furthest "ahead" (counter-clockwise) of the others, as
measured by ``vec_dqn_scores``. ``rope_rotate`` and ``vec_dqn_scores`` live in
the leaf module ``mouse.geometry`` (the actors act with them too) and are
re-exported here.

As in the document, the bootstrap does not look at ``done``: the next state's
target vector is rotated for terminal and truncated transitions too. Pairs that
cross an episode start or touch padding are masked out, as in dqn_loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mouse.geometry import rope_rotate, vec_dqn_scores
from mouse.losses.common import (
    check_index,
    check_shape,
    detached,
    masked_mean,
    masked_stats,
    metrics_dict,
    optional_action_mask,
    pair_mask,
    require_keys,
    step_mask,
    transition_reward,
    window_shape,
)
from mouse.losses.config import VecDqnLossConfig

# rope_rotate and vec_dqn_scores are re-exported: the contract imports them from here
__all__ = ["VecDqnLossConfig", "rope_rotate", "vec_dqn_loss", "vec_dqn_loss_tensors",
           "vec_dqn_scores"]

WHO = "vec_dqn_loss"


def vec_dqn_loss(step_stream, online: Tensor, target: Tensor,
                 cfg: VecDqnLossConfig) -> tuple[Tensor, dict[str, float]]:
    """``1 - cos(v(s_t, a_t), rope_rotate(v_target(s_{t+1}, greedy), theta))``, masked mean.

    Args:
        step_stream: TensorDict [B, S] (action, reward or xformed_reward; optional
            time, valid, action_mask).
        online, target: ``out["vec_dqn"]`` and ``out["vec_dqn_target"]``, [B, S, A, D].
        cfg: VecDqnLossConfig.

    Metrics: vec_dqn_loss (the returned loss, over real pairs);
    vec_dqn_score_abs_min/max/mean: ``|vec_dqn_scores(online)| / pi`` at the last
    step of each window, over allowed actions of real (valid) last steps.
    """
    loss, metrics = vec_dqn_loss_tensors(step_stream, online, target, cfg)
    return loss, metrics_dict(metrics)


def vec_dqn_loss_tensors(step_stream, online: Tensor, target: Tensor,
                         cfg: VecDqnLossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """``vec_dqn_loss`` with its metrics left as detached 0-dim tensors on the device (no
    host sync): the training path sums them there and reads them once per log interval."""
    B, S = window_shape(step_stream, WHO, min_len=2)
    require_keys(step_stream, ["action"], WHO, "step_stream", "the step records must carry action")
    if online.dim() != 4:
        raise ValueError(f"{WHO}: online vectors must be [B, S, A, D], got shape {tuple(online.shape)}")
    A, D = online.shape[-2:]
    if D % 2:
        raise ValueError(f"{WHO}: vector dim D must be even for the pairwise rotation, got D={D}; "
                         "set an even vec_dqn head dim in the model config")
    check_shape(online, (B, S, A, D), "online (out['vec_dqn'])", WHO, "[B, S, A, D]")
    check_shape(target, (B, S, A, D), "target (out['vec_dqn_target'])", WHO, "[B, S, A, D]")
    action = step_stream["action"]
    check_shape(action, (B, S), "step_stream['action']", WHO, "[B, S]")
    check_index(action, "step_stream['action']", WHO)
    amask = optional_action_mask(step_stream, (B, S, A), WHO)  # [B, S, A] or None

    mask = pair_mask(step_stream)  # [B, S-1]
    # the action out of state t is stored at t+1
    idx = action[:, 1:, None, None].expand(B, S - 1, 1, D)  # [B, S-1, 1, D]
    v_sa = online[:, :-1].gather(-2, idx).squeeze(-2)  # [B, S-1, D]
    theta = transition_reward(step_stream, cfg, mask, WHO)  # [B, S-1]
    with torch.no_grad():  # the bootstrap target never carries gradient
        nxt = target[:, 1:]  # [B, S-1, A, D]
        next_mask = None if amask is None else amask[:, 1:]  # [B, S-1, A]
        greedy = vec_dqn_scores(nxt, next_mask).argmax(-1)  # [B, S-1]
        gidx = greedy[..., None, None].expand(B, S - 1, 1, D)  # [B, S-1, 1, D]
        v_next = nxt.gather(-2, gidx).squeeze(-2)  # [B, S-1, D]
        goal = rope_rotate(v_next, theta)  # [B, S-1, D]
    per_entry = 1 - F.cosine_similarity(v_sa, goal, dim=-1, eps=1e-8)  # [B, S-1]
    loss = masked_mean(per_entry, mask)

    with torch.no_grad():
        last_mask = None if amask is None else amask[:, -1]  # [B, A]
        score = vec_dqn_scores(online[:, -1], last_mask).abs() / math.pi  # [B, A]
        real = step_mask(step_stream)[:, -1, None].expand(B, A)  # [B, A]
        if last_mask is not None:
            real = real & last_mask
        stats = masked_stats(score, real)  # disallowed scores are inf: masked out
    return loss, detached({
        "vec_dqn_loss": loss,
        "vec_dqn_score_abs_min": stats["min"],
        "vec_dqn_score_abs_max": stats["max"],
        "vec_dqn_score_abs_mean": stats["mean"],
    })
