"""Supervised policy loss: distil the ``q_star`` annotation into the ``sp`` logits.

Per step (not per transition): every real step whose q_star has at least one
allowed entry is a training row. An action is *allowed* when its q_star is
finite (-inf marks an invalid action) and, if the records carry one, its
``action_mask`` is True. Both teacher and student put zero probability on
disallowed actions.

No NaN, in values or gradients: disallowed log-probabilities are replaced by 0
with ``torch.where`` *before* any product, so no ``0 * -inf`` is ever formed
(its gradient would be NaN even when the product is selected away afterwards).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mouse.losses.common import (
    detached,
    masked_mean,
    metrics_dict,
    optional_action_mask,
    q_star_target,
    step_mask,
)
from mouse.losses.config import SP_LOSS_TYPES as LOSS_TYPES, SpLossConfig  # noqa: F401 (re-exported)

WHO = "sp_loss"
# teacher log-probs are floored at log(smallest normal float32) so that a teacher
# probability that underflowed to 0 gives a large finite -q*log(p), not inf
_LOG_P_FLOOR = math.log(torch.finfo(torch.float32).tiny)


def _masked_log_softmax(x: Tensor, allowed: Tensor) -> Tensor:
    """log_softmax over allowed entries; 0 (not -inf) at disallowed ones. [..., A]"""
    log_p = F.log_softmax(x.masked_fill(~allowed, float("-inf")), dim=-1)  # [..., A]
    return torch.where(allowed, log_p, torch.zeros_like(log_p))


def _teacher(q_safe: Tensor, allowed: Tensor, cfg: SpLossConfig) -> tuple[Tensor, Tensor]:
    """Teacher probabilities and floored log-probabilities [B, S, A], 0 where disallowed.

    ``q_safe`` is q_star with every entry off ``allowed`` replaced by a finite value.
    """
    if cfg.loss_type == "ce":
        label = q_safe.masked_fill(~allowed, float("-inf")).argmax(-1)  # [B, S]; ties: first
        one_hot = F.one_hot(label, q_safe.shape[-1]).bool()  # [B, S, A]
        log_p = torch.zeros_like(q_safe).masked_fill(~one_hot, float("-inf"))  # log one-hot
    else:
        log_p = F.log_softmax((q_safe / cfg.temperature).masked_fill(~allowed, float("-inf")), -1)
    if cfg.label_smoothing > 0:
        eps = cfg.label_smoothing
        log_u = -allowed.sum(-1, keepdim=True).to(q_safe.dtype).log()  # [B, S, 1]: uniform
        log_p = torch.logaddexp(log_p + math.log(1 - eps), log_u + math.log(eps))  # [B, S, A]
    p = torch.where(allowed, log_p.exp(), torch.zeros_like(log_p))  # [B, S, A]
    log_p = torch.where(allowed, log_p.clamp(min=_LOG_P_FLOOR), torch.zeros_like(log_p))
    return p.detach(), log_p.detach()


def _per_row(kind: str, p: Tensor, log_p: Tensor, q: Tensor, log_q: Tensor) -> Tensor:
    """Per-row loss [B, S] from distributions [B, S, A] (all finite, 0 off the support)."""
    # 0 * log 0 = 0 comes for free: log_p is floored, so finite wherever p == 0
    p_log_p = p * log_p
    if kind in ("ce", "ce-soft-fwd"):  # H(P, Q)
        return -(p * log_q).sum(-1)
    if kind == "ce-soft-bwd":  # H(Q, P)
        return -(q * log_p).sum(-1)
    if kind == "kl-fwd":  # KL(P || Q)
        return (p_log_p - p * log_q).sum(-1)
    if kind == "kl-bwd":  # KL(Q || P)
        return (q * (log_q - log_p)).sum(-1)
    # js: M = (P + Q) / 2, computed in log space
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)  # [B, S, A]
    kl_pm = (p_log_p - p * log_m).sum(-1)
    kl_qm = (q * (log_q - log_m)).sum(-1)
    return 0.5 * kl_pm + 0.5 * kl_qm


def sp_loss(step_stream, logits: Tensor, cfg: SpLossConfig) -> tuple[Tensor, dict[str, float]]:
    """Distillation loss of ``logits`` [B, S, A] (``out["sp"]``) onto ``q_star``.

    Teacher: one-hot argmax of q_star for "ce", softmax(q_star / temperature)
    otherwise, over allowed actions; label smoothing mixes in uniform mass over
    the allowed actions. Student: softmax of the logits over allowed actions.
    Loss: the per-row divergence, masked mean over real rows (valid and with at
    least one allowed action). Metric: sp_loss (the returned loss).
    """
    loss, metrics = sp_loss_tensors(step_stream, logits, cfg)
    return loss, metrics_dict(metrics)


def sp_loss_tensors(step_stream, logits: Tensor,
                    cfg: SpLossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """``sp_loss`` with its metrics left as detached 0-dim tensors on the device (no host
    sync): the training path sums them there and reads them once per log interval."""
    q_star = q_star_target(step_stream, logits, "logits (out['sp'])", WHO)
    B, S, A = q_star.shape
    allowed = torch.isfinite(q_star)  # [B, S, A]
    amask = optional_action_mask(step_stream, (B, S, A), WHO)
    if amask is not None:
        allowed = allowed & amask
    has_allowed = allowed.any(-1)  # [B, S]
    mask = step_mask(step_stream) & has_allowed  # [B, S]
    # rows with nothing allowed are masked out; let them use every action so that
    # no softmax runs over an empty support (which would be NaN)
    support = allowed | ~has_allowed[..., None]  # [B, S, A]

    log_q = _masked_log_softmax(logits, support)  # [B, S, A]
    q = torch.where(support, log_q.exp(), torch.zeros_like(log_q))  # [B, S, A]
    q_safe = torch.where(allowed, q_star, torch.zeros_like(q_star))  # [B, S, A], no -inf
    p, log_p = _teacher(q_safe, support, cfg)  # [B, S, A] each
    loss = masked_mean(_per_row(cfg.loss_type, p, log_p, q, log_q), mask)
    return loss, detached({"sp_loss": loss})
