"""Output layers on the backbone features, and the Polyak update of target heads.

Which heads exist, and their shapes, is the registry's (mouse.heads).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


class Head(nn.Module):
    """[..., H] -> [..., *out_shape]: ``head_layers`` hidden ReLU layers, then a linear."""

    def __init__(self, cfg: ModelConfig, out_shape: tuple[int, ...]):
        super().__init__()
        self.out_shape = tuple(out_shape)
        layers: list[nn.Module] = []
        for _ in range(cfg.head_layers):
            layers += [nn.Linear(cfg.hidden_dim, cfg.hidden_dim), nn.ReLU()]
        n_out = 1
        for d in self.out_shape:
            n_out *= d
        layers.append(nn.Linear(cfg.hidden_dim, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        y = self.net(features)
        return y.reshape(*features.shape[:-1], *self.out_shape)


@torch.no_grad()
def polyak_(target: nn.Module, online: nn.Module, tau: float | torch.Tensor) -> None:
    """θ_target ← τ·θ_online + (1−τ)·θ_target, in place; τ = 1 copies exactly.

    ``tau`` may be a 0-dim tensor on the params' device (the train step zeroes it
    after a skipped update); it is never read on the host.
    """
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if isinstance(tau, torch.Tensor):
        # the List overload keeps the weight on the device: a 0-dim tensor passed as the
        # single weight would be taken as a Python Scalar (.item(), a host sync)
        torch._foreach_lerp_(t_params, o_params, [tau] * len(t_params))
    elif tau >= 1.0:
        torch._foreach_copy_(t_params, o_params)
    else:
        torch._foreach_lerp_(t_params, o_params, tau)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)
