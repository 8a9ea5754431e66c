"""Action-vector geometry of the vec_dqn head: RoPE rotation and the greedy scores.

A leaf module (torch only): the vec_dqn loss bootstraps with it and the actors
act with it, and neither should have to import the other to get it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def rope_rotate(x: Tensor, theta: Tensor | float) -> Tensor:
    """Rotate every pair ``(x[..., 2i], x[..., 2i+1])`` counter-clockwise by ``theta``.

    ``x`` is [..., D] with D even; ``theta`` (radians) broadcasts to ``x[..., 0]``.
    """
    D = x.shape[-1]
    if D % 2:
        raise ValueError(f"rope_rotate: the last dim must be even (pairs of coordinates), got D={D}")
    if isinstance(theta, Tensor):
        theta = theta.to(device=x.device, dtype=x.dtype)[..., None]  # [..., 1]
        cos, sin = theta.cos(), theta.sin()
    else:
        # a Python angle stays a Python number: torch.as_tensor(float, device=cuda) is
        # a blocking host-to-device copy, i.e. a host sync on every call
        cos, sin = math.cos(theta), math.sin(theta)
    even, odd = x[..., 0::2], x[..., 1::2]  # [..., D/2] each
    rot_even = cos * even - sin * odd  # [..., D/2]
    rot_odd = sin * even + cos * odd  # [..., D/2]
    return torch.stack([rot_even, rot_odd], dim=-1).flatten(-2)  # [..., D]


def vec_dqn_scores(v: Tensor, action_mask: Tensor | None = None) -> Tensor:
    """Scores [..., A] of action vectors ``v`` [..., A, D]; argmax is the greedy action.

    ``score_a = sum_i atan2(<rot90(u_i), u_a>, <u_i, u_a>)`` with ``u`` the unit
    vectors and rot90 = ``rope_rotate`` by pi/2: the sum of signed angles by which
    u_a is ahead of each u_i (each in (-pi, pi]). With ``action_mask`` [..., A]
    (extension; optional) disallowed actions are left out of the sum and score -inf.
    """
    if v.shape[-1] % 2:
        raise ValueError(f"vec_dqn_scores: vector dim D must be even, got D={v.shape[-1]}")
    u = F.normalize(v, dim=-1, eps=1e-8)  # [..., A, D]
    r = rope_rotate(u, math.pi / 2)  # [..., A, D]
    sin = torch.einsum("...id,...ad->...ai", r, u)  # [..., A(a), A(i)]
    cos = torch.einsum("...id,...ad->...ai", u, u)  # [..., A(a), A(i)]
    angle = torch.atan2(sin, cos)  # [..., A, A]: signed angle from u_i to u_a
    if action_mask is None:
        return angle.sum(-1)  # [..., A]
    angle = angle.masked_fill(~action_mask[..., None, :], 0.0)  # drop disallowed i
    return angle.sum(-1).masked_fill(~action_mask, float("-inf"))  # [..., A]
