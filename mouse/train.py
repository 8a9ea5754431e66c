"""The learner's update: forward, Σ weight·loss over the active heads, one Adam step, Polyak.

Pure of processes and sockets: ``train_step`` takes a model, its optimizer, one
``TensorDict[B, S]`` batch of windows and a frozen config, and returns the
metrics of that update as detached 0-dim tensors on the model's device: reading
them is a host sync, so the learner sums them in a ``MetricMeans`` and reads the
means once per log interval. Which heads there are, and their losses, comes from
the registry in ``mouse.heads``.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from mouse import heads as registry
from mouse.optim import fused_adam, step_unless
from mouse.train_config import TrainConfig  # noqa: F401 (re-exported)

# the heads registered at import (the built-ins); the code below reads the registry
LOSS_HEADS = registry.head_names()
# the supervised heads learn from the actors' exact q_star annotation
NEEDS_Q_STAR = tuple(h.name for h in registry.all_heads() if h.needs_q_star)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Fused Adam over the parameters that require grad (target heads are left out).

    Fused on every device: one kernel per step, and the only Adam that can skip a
    non-finite step without a host sync (``mouse.optim``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return fused_adam(params, lr=cfg.lr, eps=cfg.adam_eps)


def _check_batch(batch: TensorDict, cfg: TrainConfig) -> None:
    for h in cfg.active_heads():
        if registry.get(h).needs_q_star and "q_star" not in batch.keys():
            weight = registry.loss_config(cfg, registry.get(h)).weight
            raise KeyError(
                f"the {h} loss has weight {weight} > 0 but the batch has no 'q_star' "
                f"(keys: {sorted(batch.keys())}); run an env with exact q_star "
                f"annotation or set train.{h}.weight = 0")


def _check_outputs(out: TensorDict, cfg: TrainConfig) -> None:
    present = set(out.keys())
    for h in cfg.active_heads():
        missing = [k for k in registry.get(h).outputs if k not in present]
        if missing:
            weight = registry.loss_config(cfg, registry.get(h)).weight
            raise KeyError(
                f"the {h} loss has weight {weight} > 0 but the model output has no {missing} "
                f"(outputs: {sorted(present)}); build the model with "
                "heads=heads_for(train_cfg, policy)")


def _weighted_sum(batch: TensorDict, out: TensorDict,
                  cfg: TrainConfig) -> tuple[Tensor, dict[str, Tensor]]:
    terms: list[Tensor] = []
    metrics: dict[str, Tensor] = {}
    for h in cfg.active_heads():
        head = registry.get(h)
        hcfg = registry.loss_config(cfg, head)
        loss, m = head.loss(batch, out, hcfg)
        terms.append(hcfg.weight * loss)
        metrics.update({f"loss/{h}/{k}": v for k, v in m.items()})
    total = terms[0] if len(terms) == 1 else torch.stack(terms).sum()
    return total, metrics


def combined_loss(batch: TensorDict, out: TensorDict,
                  cfg: TrainConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """``Σ cfg.<head>.weight · loss`` over heads with weight > 0; metrics as
    ``loss/<head>/<name>``, detached 0-dim tensors on the device."""
    _check_batch(batch, cfg)
    _check_outputs(out, cfg)
    return _weighted_sum(batch, out, cfg)


def _grad_norm(optimizer: torch.optim.Optimizer, grad_clip: float) -> Tensor:
    """Global gradient norm before clipping (clipped in place when grad_clip > 0)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if grad_clip > 0:
        return nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    return nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)


def _polyak_taus(cfg: TrainConfig, keep: Tensor) -> dict[str, Tensor]:
    """``<head>_tau = τ · keep`` for each target head whose loss config has τ > 0.

    ``keep`` [] is 0.0 after a skipped step: the online heads did not move, but a lerp
    would still pull the targets towards them, so the targets hold still too.
    """
    taus = {}
    for head in registry.all_heads():
        hcfg = registry.loss_config(cfg, head)
        if head.has_target and hcfg is not None and hcfg.tau > 0:
            taus[f"{head.name}_tau"] = hcfg.tau * keep
    return taus


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: TensorDict,
               cfg: TrainConfig) -> dict[str, Tensor]:
    """One update on ``batch`` [B, S], with no host sync.

    Returns detached float32 [] tensors on the model's device: ``loss/<head>/<metric>``,
    ``loss/total``, ``loss/grad_norm`` (the norm before clipping) and
    ``train/skipped_nonfinite`` (1.0 when the total loss or the gradient norm was not
    finite: then no parameter, online or target, and no optimizer state moved).
    """
    _check_batch(batch, cfg)  # before the forward: fail fast, not after a wasted pass
    out = model(batch)
    _check_outputs(out, cfg)
    total, metrics = _weighted_sum(batch, out, cfg)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    total = total.detach()
    grad_norm = _grad_norm(optimizer, cfg.grad_clip).detach().float()
    skip = (~(torch.isfinite(total) & torch.isfinite(grad_norm))).float()  # [], 1.0 = skip
    step_unless(optimizer, skip)
    model.polyak_update(**_polyak_taus(cfg, keep=1.0 - skip))
    metrics["loss/total"] = total.float()
    metrics["loss/grad_norm"] = grad_norm
    metrics["train/skipped_nonfinite"] = skip
    return metrics


class MetricMeans:
    """Means of ``train_step`` metrics over a log interval, summed on the device.

    ``add`` costs no host sync (one stack and one add on the device per update);
    ``flush`` reads every mean with one sync and starts the next interval.
    """

    def __init__(self):
        # one running sum [K] per set of metric names (the set is the same every update
        # unless the config changes): stacking K scalars is one kernel, not K adds
        self._sums: dict[tuple[str, ...], Tensor] = {}
        self._counts: dict[tuple[str, ...], int] = {}

    def add(self, metrics: dict[str, Tensor]) -> None:
        if not metrics:
            return
        names = tuple(metrics)
        values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()])  # [K]
        if names in self._sums:
            self._sums[names] += values
            self._counts[names] += 1
        else:
            self._sums[names] = values
            self._counts[names] = 1

    def flush(self) -> dict[str, float]:
        """The mean of each metric over the updates added since the last flush; {} if none."""
        if not self._sums:
            return {}
        groups = list(self._sums)
        flat = torch.cat([self._sums[g] for g in groups]).tolist()  # the one host sync
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        values = iter(flat)
        for g in groups:
            for name in g:
                sums[name] = sums.get(name, 0.0) + next(values)
                counts[name] = counts.get(name, 0) + self._counts[g]
        self._sums.clear()
        self._counts.clear()
        return {name: sums[name] / counts[name] for name in sums}
