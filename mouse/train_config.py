"""The train step's config (optimizer and the losses' weights), without torch.

Re-exported by ``mouse.train``; it lives apart so that the run config, and with
it ``mouse --help``, can be built without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mouse import heads as registry
from mouse.losses.config import DqnLossConfig, SpLossConfig, SvLossConfig, VecDqnLossConfig


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    """Adam learning rate."""
    adam_eps: float = 1e-5
    """Adam epsilon (larger than torch's 1e-8: steadier steps on RL's noisy targets)."""
    grad_clip: float = 10.0
    """Max global gradient norm (clip_grad_norm_); 0 = no clipping (the norm is still logged)."""
    batch_size: int = 64
    """Windows per update (B)."""
    seq_len: int = 8
    """Consecutive steps per window (S); >= 2 since a transition pairs t with t+1."""
    # time-limit truncation is not a real terminal state: bootstrap through it (the loss
    # config's own default, from losses-api.txt, is gamma_truncated=0)
    dqn: DqnLossConfig = field(default_factory=lambda: DqnLossConfig(gamma_truncated=0.99))
    """TD loss of the dqn head (and the Polyak rate of its target)."""
    vec_dqn: VecDqnLossConfig = field(default_factory=lambda: VecDqnLossConfig(weight=0.0))
    """Rotation loss of the vec_dqn head (and the Polyak rate of its target); off by default."""
    sp: SpLossConfig = field(default_factory=lambda: SpLossConfig(weight=0.0))
    """Policy distillation from q_star into the sp logits; off by default."""
    sv: SvLossConfig = field(default_factory=lambda: SvLossConfig(weight=0.0))
    """Value regression of the sv head onto q_star; off by default."""

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if not self.adam_eps > 0:
            raise ValueError(f"train.adam_eps must be > 0, got {self.adam_eps}")
        if not self.grad_clip >= 0:
            raise ValueError(f"train.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.seq_len < 2:
            raise ValueError(f"train.seq_len must be >= 2 (a transition pairs step t with t+1), "
                             f"got {self.seq_len}")
        if not self.active_heads():
            raise ValueError("at least one loss weight must be > 0: "
                             + ", ".join(f"train.{h}.weight" for h in registry.head_names()))

    def active_heads(self) -> tuple[str, ...]:
        """Heads whose loss has weight > 0, in canonical order."""
        return registry.active_heads(self)
