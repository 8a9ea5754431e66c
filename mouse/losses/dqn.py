"""One-step TD loss for the twin (online / target) ``dqn`` Q-heads, with optional CQL.

Record t stores the action, reward and done that *produced* obs_t, so the
transition out of state t is read at t+1: the loss pairs ``[:, :-1]`` (state t)
with ``[:, 1:]`` (action, reward, done, next state). Pairs that cross an episode
start (``time[t+1] == 0``) or touch padding (``valid``) are masked out.
"""

from __future__ import annotations

from torch import Tensor

from mouse.losses.common import (
    check_index,
    check_shape,
    detached,
    masked_logsumexp,
    masked_max,
    masked_mean,
    masked_stats,
    metrics_dict,
    optional_action_mask,
    pair_mask,
    require_keys,
    transition_reward,
    window_shape,
)
from mouse.losses.config import DqnLossConfig  # noqa: F401 (re-exported)
from mouse.records import TERMINAL, TRUNCATED

WHO = "dqn_loss"


def dqn_loss(step_stream, out, cfg: DqnLossConfig) -> tuple[Tensor, dict[str, float]]:
    """One-step TD loss (+ optional CQL penalty), masked mean over real pairs.

    Args:
        step_stream: TensorDict [B, S] of step records (action, reward or
            xformed_reward, done; optional time, valid, action_mask).
        out: model output with ``dqn`` and ``dqn_target``, each [B, S, A].
        cfg: DqnLossConfig.

    Returns ``(loss, metrics)``; every metric is over the real pairs (t, t+1):
        q_values_mean/std/min/max: Q(s_t, a_t) of the online head (population std);
        q_values_target: mean of the (detached) TD target;
        dqn_loss: the returned loss (TD error squared + CQL penalty);
        cql_penalty (only when cql_weight > 0): mean of the CQL term as added to
            the loss, ``cql_weight * (|td_target| + cql_scale_q_eps) * (logsumexp_a Q - Q_sa)``.
    """
    loss, metrics = dqn_loss_tensors(step_stream, out, cfg)
    return loss, metrics_dict(metrics)


def dqn_loss_tensors(step_stream, out, cfg: DqnLossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """``dqn_loss`` with its metrics left as detached 0-dim tensors on the device (no host
    sync): the training path sums them there and reads them once per log interval."""
    B, S = window_shape(step_stream, WHO, min_len=2)
    require_keys(out, ["dqn", "dqn_target"], WHO, "model output",
                 "enable the dqn head in the model config and pass model(step_stream)")
    require_keys(step_stream, ["action", "done"], WHO, "step_stream",
                 "the step records must carry action and done")
    q, q_target = out["dqn"], out["dqn_target"]
    A = q.shape[-1] if q.dim() == 3 else -1
    check_shape(q, (B, S, A), "out['dqn']", WHO, "[B, S, A]")
    check_shape(q_target, (B, S, A), "out['dqn_target']", WHO, "[B, S, A]")
    action, done = step_stream["action"], step_stream["done"]
    check_shape(action, (B, S), "step_stream['action']", WHO, "[B, S]")
    check_shape(done, (B, S), "step_stream['done']", WHO, "[B, S]")
    check_index(action, "step_stream['action']", WHO)
    amask = optional_action_mask(step_stream, (B, S, A), WHO)  # [B, S, A] or None

    mask = pair_mask(step_stream)  # [B, S-1]
    # the action out of state t is stored at t+1
    q_sa = q[:, :-1].gather(-1, action[:, 1:, None]).squeeze(-1)  # [B, S-1]
    r = transition_reward(step_stream, cfg, mask, WHO)  # [B, S-1]
    term = (done[:, 1:] == TERMINAL).to(q.dtype)  # [B, S-1]
    trunc = (done[:, 1:] == TRUNCATED).to(q.dtype)  # [B, S-1]
    discount = (cfg.gamma * (1 - term - trunc) + cfg.gamma_terminal * term
                + cfg.gamma_truncated * trunc)  # [B, S-1]
    next_mask = None if amask is None else amask[:, 1:]  # [B, S-1, A]
    # no gradient may reach the target head: it only moves by polyak_update
    td_target = (r + discount * masked_max(q_target[:, 1:], next_mask)).detach()  # [B, S-1]
    td = (q_sa - td_target) ** 2  # [B, S-1]

    stats = masked_stats(q_sa, mask)
    m = {
        "q_values_mean": stats["mean"],
        "q_values_std": stats["std"],
        "q_values_min": stats["min"],
        "q_values_max": stats["max"],
        "q_values_target": masked_mean(td_target, mask),
    }
    per_entry = td
    if cfg.cql_weight > 0:
        cur_mask = None if amask is None else amask[:, :-1]  # [B, S-1, A]
        gap = masked_logsumexp(q[:, :-1], cur_mask) - q_sa  # [B, S-1], >= 0
        scale = (td_target.abs() + cfg.cql_scale_q_eps).detach()  # [B, S-1]
        cql = cfg.cql_weight * scale * gap  # [B, S-1]
        per_entry = td + cql
        m["cql_penalty"] = masked_mean(cql, mask)
    loss = masked_mean(per_entry, mask)
    m["dqn_loss"] = loss
    return loss, detached(m)
