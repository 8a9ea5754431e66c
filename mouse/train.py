"""The learner's update: forward, Σ weight·loss over the active heads, one Adam step, Polyak.

Pure of processes and sockets: ``train_step`` takes a model, its optimizer, one
``TensorDict[B, S]`` batch of windows and a frozen config, and returns the
metrics of that update as floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tensordict import TensorDict
from torch import nn

from mouse.losses.dqn import DqnLossConfig, dqn_loss
from mouse.losses.sp import SpLossConfig, sp_loss
from mouse.losses.sv import SvLossConfig, sv_loss
from mouse.losses.vec_dqn import VecDqnLossConfig, vec_dqn_loss

LOSS_HEADS = ("dqn", "vec_dqn", "sp", "sv")
# the supervised heads learn from the actors' exact q_star annotation
NEEDS_Q_STAR = ("sp", "sv")


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 3e-4
    """Adam learning rate."""
    adam_eps: float = 1e-5
    """Adam epsilon (larger than torch's 1e-8: steadier steps on RL's noisy targets)."""
    grad_clip: float = 10.0
    """Max global gradient norm (clip_grad_norm_); 0 = no clipping (the norm is still logged)."""
    batch_size: int = 256
    """Windows per update (B)."""
    seq_len: int = 16
    """Consecutive steps per window (S); >= 2 since a transition pairs t with t+1."""
    dqn: DqnLossConfig = field(default_factory=DqnLossConfig)
    """TD loss of the dqn head (and the Polyak rate of its target)."""
    vec_dqn: VecDqnLossConfig = field(default_factory=lambda: VecDqnLossConfig(weight=0.0))
    """Rotation loss of the vec_dqn head (and the Polyak rate of its target); off by default."""
    sp: SpLossConfig = field(default_factory=lambda: SpLossConfig(weight=0.0))
    """Policy distillation from q_star into the sp logits; off by default."""
    sv: SvLossConfig = field(default_factory=lambda: SvLossConfig(weight=0.0))
    """Value regression of the sv head onto q_star; off by default."""

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be > 0, got {self.adam_eps}")
        if not self.grad_clip >= 0:
            raise ValueError(f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2 (a transition pairs step t with t+1), "
                             f"got {self.seq_len}")
        if not self.active_heads():
            raise ValueError(f"at least one loss weight must be > 0 among {LOSS_HEADS}")

    def active_heads(self) -> tuple[str, ...]:
        """Heads whose loss has weight > 0, in canonical order."""
        return tuple(h for h in LOSS_HEADS if getattr(self, h).weight > 0)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the parameters that require grad (target heads are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    fused = all(p.is_cuda for p in params)  # one kernel per step instead of one per tensor
    return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.adam_eps, fused=fused or None)


def _check_batch(batch: TensorDict, cfg: TrainConfig) -> None:
    for h in NEEDS_Q_STAR:
        if getattr(cfg, h).weight > 0 and "q_star" not in batch.keys():
            raise KeyError(
                f"the {h} loss has weight {getattr(cfg, h).weight} > 0 but the batch has no "
                f"'q_star' (keys: {sorted(batch.keys())}); run an env with exact q_star "
                f"annotation or set train.{h}.weight = 0")


def _check_outputs(out: TensorDict, cfg: TrainConfig) -> None:
    present = set(out.keys())
    for h in cfg.active_heads():
        need = [h, f"{h}_target"] if h in ("dqn", "vec_dqn") else [h]
        missing = [k for k in need if k not in present]
        if missing:
            raise KeyError(
                f"the {h} loss has weight {getattr(cfg, h).weight} > 0 but the model output "
                f"has no {missing} (outputs: {sorted(present)}); build the model with "
                "heads=heads_for(train_cfg, policy)")


def combined_loss(batch: TensorDict, out: TensorDict,
                  cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``Σ cfg.<head>.weight · loss`` over heads with weight > 0; metrics as ``loss/<head>/<name>``."""
    _check_batch(batch, cfg)
    _check_outputs(out, cfg)
    terms: list[torch.Tensor] = []
    metrics: dict[str, float] = {}
    for h in cfg.active_heads():
        hcfg = getattr(cfg, h)
        if h == "dqn":
            loss, m = dqn_loss(batch, out, hcfg)
        elif h == "vec_dqn":
            loss, m = vec_dqn_loss(batch, out["vec_dqn"], out["vec_dqn_target"], hcfg)
        elif h == "sp":
            loss, m = sp_loss(batch, out["sp"], hcfg)
        else:
            loss, m = sv_loss(batch, out["sv"], hcfg)
        terms.append(hcfg.weight * loss)
        metrics.update({f"loss/{h}/{k}": v for k, v in m.items()})
    total = terms[0] if len(terms) == 1 else torch.stack(terms).sum()
    return total, metrics


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: TensorDict,
               cfg: TrainConfig) -> dict[str, float]:
    """One update on ``batch`` [B, S]; returns ``loss/<head>/<metric>``, ``loss/total``,
    ``loss/grad_norm`` (the norm before clipping)."""
    _check_batch(batch, cfg)  # before the forward: fail fast, not after a wasted pass
    out = model(batch)
    total, metrics = combined_loss(batch, out, cfg)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if cfg.grad_clip > 0:
        grad_norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
    else:
        grad_norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None],
                                            foreach=True)
    optimizer.step()
    model.polyak_update(dqn_tau=cfg.dqn.tau, vec_dqn_tau=cfg.vec_dqn.tau)
    # one host sync for our own scalars (the losses already built their float metrics)
    total_f, norm_f = torch.stack([total.detach().float(), grad_norm.float()]).tolist()
    metrics["loss/total"] = total_f
    metrics["loss/grad_norm"] = norm_f
    return metrics
