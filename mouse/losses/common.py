"""Helpers shared by the losses: input checks, masks, masked reductions, rewards.

Every loss computes per-entry values over the whole ``[B, S]`` window and then
averages only the *real* entries (see DESIGN.md, "Masking"): a window cut from
a stream may cross an episode boundary or end in padding. Masked-out entries are
selected away with ``torch.where`` (never multiplied by 0), so a NaN or inf in a
masked-out entry cannot leak into the loss.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from mouse.losses.config import RewardConfig

# ---------------------------------------------------------------- input checks


def window_shape(step_stream, who: str, min_len: int = 1) -> tuple[int, int]:
    """``(B, S)`` of a step-stream batch, checking it is a ``[B, S]`` window."""
    batch = tuple(getattr(step_stream, "batch_size", ()))
    if len(batch) != 2:
        raise ValueError(
            f"{who}: step_stream must be a TensorDict with batch dims [B, S], got batch_size "
            f"{batch}; pass the windows from PrefetchBatchifier, not single records"
        )
    B, S = batch
    if S < min_len:
        raise ValueError(
            f"{who}: windows must hold at least {min_len} steps (S >= {min_len}), got S={S}: "
            "a one-step loss pairs state t with the transition stored at t+1; "
            "raise the batchifier's sequence length"
        )
    return B, S


def require_keys(mapping: Mapping, keys: Sequence[str], who: str, what: str, hint: str) -> None:
    """Raise ``KeyError`` naming every missing key and how to provide it."""
    present = set(mapping.keys())
    missing = [k for k in keys if k not in present]
    if missing:
        raise KeyError(f"{who}: {what} has no {missing} (has {sorted(present)}); {hint}")


def check_shape(x: Tensor, expected: Sequence[int], name: str, who: str, dims: str) -> None:
    """Raise ``ValueError`` unless ``x.shape == expected``; ``dims`` names the axes."""
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"{who}: {name} has shape {tuple(x.shape)}, expected {dims} = {tuple(expected)}; "
            "all tensors of one loss call must come from the same [B, S] window"
        )


def q_star_target(step_stream, head: Tensor, head_name: str, who: str) -> Tensor:
    """The batch's ``q_star`` [B, S, A], checked against the head output it supervises."""
    B, S = window_shape(step_stream, who)
    require_keys(step_stream, ["q_star"], who, "step_stream",
                 f"{who} needs q_star annotations: enable q_star on the actors (envs with a known model)")
    q_star = step_stream["q_star"]
    if q_star.dim() != 3:
        raise ValueError(f"{who}: step_stream['q_star'] must be [B, S, A], got {tuple(q_star.shape)}")
    check_shape(head, (B, S, q_star.shape[-1]), head_name, who, "[B, S, A] (like q_star)")
    return q_star


def check_index(x: Tensor, name: str, who: str) -> None:
    if x.dtype != torch.int64:
        raise ValueError(f"{who}: {name} must be int64 action indices, got {x.dtype}")


def optional_action_mask(step_stream, shape: Sequence[int], who: str) -> Tensor | None:
    """The bool ``action_mask`` [B, S, A] if the records carry one, else None."""
    if "action_mask" not in step_stream.keys():
        return None
    m = step_stream["action_mask"]
    check_shape(m, shape, "step_stream['action_mask']", who, "[B, S, A]")
    return m.bool()


# ---------------------------------------------------------------------- masks


def step_mask(step_stream) -> Tensor:
    """Bool [B, S]: the record is real (not padding). All True without ``valid``."""
    B, S = tuple(step_stream.batch_size)
    if "valid" in step_stream.keys():
        valid = step_stream["valid"]
        check_shape(valid, (B, S), "step_stream['valid']", "step_mask", "[B, S]")
        return valid.bool()  # [B, S]
    return torch.ones(B, S, dtype=torch.bool, device=_device(step_stream))


def pair_mask(step_stream) -> Tensor:
    """Bool [B, S-1]: the pair (t, t+1) is a real transition.

    Record t+1 must not start a new episode (``time[:, 1:] != 0``; a reset
    record's action/reward did not come out of state t) and both records must be
    real (optional bool ``valid``). All True when neither key is present.
    """
    valid = step_mask(step_stream)  # [B, S]
    mask = valid[:, :-1] & valid[:, 1:]  # [B, S-1]
    if "time" in step_stream.keys():
        time = step_stream["time"]
        check_shape(time, valid.shape, "step_stream['time']", "pair_mask", "[B, S]")
        mask = mask & (time[:, 1:] != 0)  # [B, S-1]
    return mask


def _device(step_stream) -> torch.device:
    if getattr(step_stream, "device", None) is not None:
        return step_stream.device
    for v in step_stream.values():
        return v.device
    return torch.device("cpu")


# ---------------------------------------------------------- masked reductions


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over ``mask`` (broadcast to x); 0 when nothing is real.

    The result stays connected to ``x`` even when the count is 0, so
    ``backward()`` works (with zero gradients) on an all-padding batch.
    """
    mask = mask.expand_as(x)
    total = torch.where(mask, x, torch.zeros_like(x)).sum()
    return total / mask.sum().clamp(min=1)


def masked_stats(x: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Detached mean, population std, min and max of ``x`` over ``mask``; 0s if empty."""
    x = x.detach()
    mask = mask.expand_as(x)
    any_real = mask.any()
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()
    inf = torch.full_like(x, float("inf"))
    zero = torch.zeros_like(mean)
    lo = torch.where(any_real, torch.where(mask, x, inf).amin(), zero)
    hi = torch.where(any_real, torch.where(mask, x, -inf).amax(), zero)
    return {"mean": mean, "std": std, "min": lo, "max": hi}


def masked_max(x: Tensor, action_mask: Tensor | None = None) -> Tensor:
    """Max over the last (action) dim, allowed actions only: [..., A] -> [...].

    A row with no allowed action gives 0 (not -inf) so it cannot produce NaN;
    such rows should also be masked out of the loss by the caller.
    """
    if action_mask is None:
        return x.amax(-1)
    allowed_any = action_mask.any(-1)  # [...]
    filled = x.masked_fill(~action_mask, float("-inf")).amax(-1)  # [...]
    return torch.where(allowed_any, filled, torch.zeros_like(filled))


def masked_logsumexp(x: Tensor, action_mask: Tensor | None = None) -> Tensor:
    """logsumexp over the last (action) dim, allowed actions only: [..., A] -> [...].

    Rows with no allowed action give 0: they keep all their entries inside
    logsumexp, because its gradient over an all -inf row is NaN.
    """
    if action_mask is None:
        return torch.logsumexp(x, -1)
    allowed_any = action_mask.any(-1, keepdim=True)  # [..., 1]
    keep = action_mask | ~allowed_any  # [..., A]: empty rows keep every entry
    lse = torch.logsumexp(x.masked_fill(~keep, float("-inf")), -1)  # [...]
    return torch.where(allowed_any.squeeze(-1), lse, torch.zeros_like(lse))


# -------------------------------------------------------------------- rewards


def select_reward(step_stream, use_xformed_reward: bool, who: str) -> Tensor:
    """Reward of the transition out of state t: ``[:, 1:]`` of reward or xformed_reward."""
    key = "xformed_reward" if use_xformed_reward else "reward"
    hint = ("set use_xformed_reward=False or have the actors record xformed_reward"
            if use_xformed_reward else "the step records must carry 'reward'")
    require_keys(step_stream, [key], who, "step_stream", hint)
    r = step_stream[key]
    check_shape(r, step_stream.batch_size, f"step_stream[{key!r}]", who, "[B, S]")
    # record t+1 holds the reward of the transition out of state t
    return r[:, 1:].to(torch.float32)  # [B, S-1]


def normalize_reward(r: Tensor, mask: Tensor, *, mean: bool, std: bool, eps: float,
                     target_std: float) -> Tensor:
    """Per-row (per window) normalisation of ``r`` [B, S-1] over its real pairs.

    ``mean`` subtracts the row's masked mean; ``std`` divides by the row's masked
    population std (about the mean) + ``eps`` and multiplies by ``target_std``.
    Rows without real pairs use mean 0 / std 0; their entries are masked anyway.
    """
    if not (mean or std):
        return r
    count = mask.sum(-1, keepdim=True).clamp(min=1)  # [B, 1]
    zero = torch.zeros_like(r)
    mu = torch.where(mask, r, zero).sum(-1, keepdim=True) / count  # [B, 1]
    out = r - mu if mean else r
    if std:
        sigma = (torch.where(mask, (r - mu) ** 2, zero).sum(-1, keepdim=True) / count).sqrt()
        out = out / (sigma + eps) * target_std  # [B, S-1]
    return out


def transition_reward(step_stream, cfg: RewardConfig, mask: Tensor, who: str) -> Tensor:
    """``r' = normalise(r) * reward_scale + reward_shift`` for every pair: [B, S-1]."""
    r = select_reward(step_stream, cfg.use_xformed_reward, who)  # [B, S-1]
    r = normalize_reward(r, mask, mean=cfg.normalize_reward_mean, std=cfg.normalize_reward_std,
                         eps=cfg.normalize_reward_eps,
                         target_std=cfg.normalize_reward_target_std)
    return r * cfg.reward_scale + cfg.reward_shift


# -------------------------------------------------------------------- metrics


def detached(values: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Scalar tensors as detached 0-dim float tensors, left on their device (no sync).

    The training path sums these on the device and reads them once per log interval.
    """
    return {k: v.detach().float().reshape(()) for k, v in values.items()}


def metrics_dict(values: Mapping[str, Tensor]) -> dict[str, float]:
    """Turn scalar tensors into floats with a single device sync (one ``tolist``).

    The contract's ``dict[str, float]`` for callers outside the training loop.
    """
    names = list(values)
    floats = torch.stack([values[k].detach().float().reshape(()) for k in names]).tolist()
    return dict(zip(names, floats, strict=True))
