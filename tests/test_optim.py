"""mouse.optim: fused Adam that skips a flagged step on the device."""

from __future__ import annotations

import pytest
import torch

from mouse.optim import fused_adam, step_unless


def one_param(grad: list[float]) -> torch.nn.Parameter:
    p = torch.nn.Parameter(torch.zeros(len(grad)))
    p.grad = torch.tensor(grad)
    return p


def test_skip_then_step_hand_computed():
    p = one_param([2.0, -0.5])
    opt = fused_adam([p], lr=0.1, eps=1e-8)
    step_unless(opt, torch.tensor(1.0))
    assert torch.equal(p.detach(), torch.zeros(2))
    assert opt.state[p]["step"].item() == 0.0  # the skipped step is not counted
    step_unless(opt, torch.tensor(0.0))
    # Adam's first step: m̂ = g, v̂ = g², so p -= lr · g / (|g| + eps) ≈ -lr · sign(g)
    torch.testing.assert_close(p.detach(), torch.tensor([-0.1, 0.1]))
    assert opt.state[p]["step"].item() == 1.0


def test_no_stale_flag_after_a_skip():
    p = one_param([1.0])
    opt = fused_adam([p], lr=0.1, eps=1e-8)
    step_unless(opt, torch.tensor(1.0))
    opt.step()  # a plain step afterwards is not governed by the old flag
    torch.testing.assert_close(p.detach(), torch.tensor([-0.1]))


def test_unfused_optimizer_is_refused():
    p = one_param([1.0])
    with pytest.raises(ValueError, match="fused"):
        step_unless(torch.optim.Adam([p], lr=0.1), torch.tensor(0.0))
