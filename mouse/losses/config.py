"""The losses' frozen config dataclasses, without torch.

Names, fields and defaults are the contract's (losses-api.txt); each loss module
re-exports its config (``from mouse.losses.dqn import DqnLossConfig, dqn_loss``).
They live apart from the loss functions so that the run config, and with it
``mouse --help``, can be built without importing torch. The field docstrings
are the command's help text.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal, Protocol

SpLossType = Literal["ce", "ce-soft-fwd", "ce-soft-bwd", "js", "kl-fwd", "kl-bwd"]
SvLossType = Literal["mse", "mae"]
SP_LOSS_TYPES: tuple[str, ...] = typing.get_args(SpLossType)
SV_LOSS_TYPES: tuple[str, ...] = typing.get_args(SvLossType)


class RewardConfig(Protocol):
    """The reward fields shared by DqnLossConfig and VecDqnLossConfig."""

    use_xformed_reward: bool
    normalize_reward_mean: bool
    normalize_reward_std: bool
    normalize_reward_eps: float
    normalize_reward_target_std: float
    reward_scale: float
    reward_shift: float


def check_reward_config(cfg: RewardConfig) -> None:
    """Shared ``__post_init__`` checks of the reward fields."""
    who = type(cfg).__name__
    if not cfg.normalize_reward_eps > 0:
        raise ValueError(f"{who}.normalize_reward_eps must be > 0 (it keeps the division by the "
                         f"reward std finite), got {cfg.normalize_reward_eps}")
    if not cfg.normalize_reward_target_std > 0:
        raise ValueError(f"{who}.normalize_reward_target_std must be > 0, got "
                         f"{cfg.normalize_reward_target_std}")


def check_weight_tau(weight: float, tau: float, who: str = "") -> None:
    prefix = f"{who}." if who else ""
    if not weight >= 0:
        raise ValueError(f"{prefix}weight must be >= 0 (0 disables the loss), got {weight}")
    if not tau <= 1:
        raise ValueError(f"{prefix}tau must be <= 1 (Polyak rate; <= 0 freezes the target), got {tau}")


@dataclass(frozen=True)
class DqnLossConfig:
    weight: float = 1.0
    """Multiplier of this loss in the learner's total (0 disables it)."""
    gamma: float = 0.99
    """Discount on max Q(s') for transitions that do not end the episode."""
    gamma_terminal: float = 0.0
    """Discount on max Q(s') at terminal steps."""
    gamma_truncated: float = 0.0
    """Discount on max Q(s') at truncated steps (time limits)."""
    tau: float = 0.005
    """Polyak rate of the target Q-head: target <- tau * online + (1 - tau) * target, per update."""
    normalize_reward_mean: bool = False
    """Subtract each window's mean reward (over real pairs)."""
    normalize_reward_std: bool = False
    """Divide by each window's reward std (+ eps), times the target std."""
    cql_weight: float = 0.0
    """Weight of the CQL penalty; > 0 enables it."""
    reward_scale: float = 1.0
    """r' = r * reward_scale + reward_shift (after normalisation)."""
    reward_shift: float = 0.0
    """Added to the reward after scaling."""
    use_xformed_reward: bool = False
    """Learn from the actors' transformed reward (env.reward_transform) instead of the raw one."""
    cql_scale_q_eps: float = 1.0
    """CQL penalty scale = |TD target| + this: keeps it in proportion as Q grows, active near 0."""
    normalize_reward_eps: float = 1e-6
    """Added to the reward std before dividing."""
    normalize_reward_target_std: float = 1.0
    """Std the rewards have after std normalisation."""

    def __post_init__(self):
        check_weight_tau(self.weight, self.tau, "DqnLossConfig")
        for name in ("gamma", "gamma_terminal", "gamma_truncated"):
            g = getattr(self, name)
            if not 0.0 <= g <= 1.0:
                raise ValueError(f"DqnLossConfig.{name} must be in [0, 1], got {g}")
        if not self.cql_weight >= 0:
            raise ValueError(f"DqnLossConfig.cql_weight must be >= 0 (0 disables CQL), "
                             f"got {self.cql_weight}")
        if not self.cql_scale_q_eps >= 0:
            raise ValueError(f"DqnLossConfig.cql_scale_q_eps must be >= 0, got {self.cql_scale_q_eps}")
        check_reward_config(self)


@dataclass(frozen=True)
class VecDqnLossConfig:
    weight: float = 1.0
    """Multiplier of this loss in the learner's total (0 disables it)."""
    tau: float = 0.005
    """Polyak rate of the target vector head: target <- tau * online + (1 - tau) * target."""
    reward_scale: float = 1.0
    """Rotation angle = reward * reward_scale + reward_shift (radians)."""
    reward_shift: float = 0.0
    """Added to the rotation angle after scaling (radians)."""
    normalize_reward_mean: bool = False
    """Subtract each window's mean reward (over real pairs)."""
    normalize_reward_std: bool = False
    """Divide by each window's reward std (+ eps), times the target std."""
    use_xformed_reward: bool = False
    """Learn from the actors' transformed reward (env.reward_transform) instead of the raw one."""
    normalize_reward_eps: float = 1e-6
    """Added to the reward std before dividing."""
    normalize_reward_target_std: float = 1.0
    """Std the rewards have after std normalisation."""

    def __post_init__(self):
        check_weight_tau(self.weight, self.tau, "VecDqnLossConfig")
        check_reward_config(self)


@dataclass(frozen=True)
class SpLossConfig:
    weight: float = 1.0
    """Multiplier of this loss in the learner's total (0 disables it)."""
    loss_type: SpLossType = "ce"
    """ce: argmax(q_star) as label; soft, teacher P = softmax(q_star/temperature), Q = sp: ce-soft-fwd
    H(P,Q), ce-soft-bwd H(Q,P), js Jensen-Shannon, kl-fwd KL(P||Q), kl-bwd KL(Q||P)."""
    temperature: float = 1.0
    """Teacher temperature of the soft variants: softmax(q_star / temperature)."""
    label_smoothing: float = 0.0
    """Share of the teacher's mass spread uniformly over the allowed actions."""

    def __post_init__(self):
        if not self.weight >= 0:
            raise ValueError(f"SpLossConfig.weight must be >= 0 (0 disables the loss), got {self.weight}")
        if self.loss_type not in SP_LOSS_TYPES:
            raise ValueError(f"SpLossConfig.loss_type must be one of {SP_LOSS_TYPES}, "
                             f"got {self.loss_type!r}")
        if not self.temperature > 0:
            raise ValueError(f"SpLossConfig.temperature must be > 0 (teacher = "
                             f"softmax(q_star / temperature)), got {self.temperature}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"SpLossConfig.label_smoothing must be in [0, 1), "
                             f"got {self.label_smoothing}")


@dataclass(frozen=True)
class SvLossConfig:
    weight: float = 1.0
    """Multiplier of this loss in the learner's total (0 disables it)."""
    loss_type: SvLossType = "mse"
    """mse: squared error; mae: absolute error (against the finite q_star entries)."""

    def __post_init__(self):
        if not self.weight >= 0:
            raise ValueError(f"SvLossConfig.weight must be >= 0 (0 disables the loss), got {self.weight}")
        if self.loss_type not in SV_LOSS_TYPES:
            raise ValueError(f"SvLossConfig.loss_type must be one of {SV_LOSS_TYPES}, "
                             f"got {self.loss_type!r}")
