"""Fused Adam whose step is skipped on the device when a flag says so: no host sync.

The one adapter over torch's ``found_inf`` protocol (the one ``GradScaler``
drives): a fused optimizer reads ``optimizer.found_inf``, a float32 tensor [] on
the params' device, inside its kernel; at 1.0 the kernel leaves params,
``exp_avg`` and ``exp_avg_sq`` untouched, and ``_fused_adam`` takes back the
``step`` increment it made (``_foreach_sub_(state_steps, found_inf)``). Deciding
on the host instead (``if not torch.isfinite(loss)``) would wait for the device
on every update.

Written against torch/optim/adam.py of torch 2.4 to 2.13 (fused Adam runs on
CPU since 2.4); check ``_fused_adam`` there again when moving past them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

MIN_TORCH = "2.4"


def fused_adam(params: Iterable[nn.Parameter], lr: float, eps: float) -> torch.optim.Adam:
    """``torch.optim.Adam(fused=True)`` that stays fused across ``load_state_dict``."""
    if torch.__version__ < MIN_TORCH:
        raise RuntimeError(f"mouse needs torch >= {MIN_TORCH} (fused Adam on every device), "
                           f"got {torch.__version__}")
    optimizer = torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    optimizer.register_load_state_dict_post_hook(_stay_fused)
    return optimizer


def _stay_fused(optimizer: torch.optim.Optimizer) -> None:
    # load_state_dict copies the saved param-group flags over ours: a checkpoint from
    # before Adam was fused on CPU says fused=None, and unfused Adam refuses found_inf
    for group in optimizer.param_groups:
        if group["fused"]:
            continue
        group["fused"] = True
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if "step" in state:  # unfused keeps the count on the CPU; fused, beside the param
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


def step_unless(optimizer: torch.optim.Optimizer, skip: Tensor) -> None:
    """``optimizer.step()``, except where ``skip`` (float32 [], 1.0 or 0.0, on the params'
    device) is 1.0: then params and optimizer state stay bit-identical."""
    if not all(group.get("fused") for group in optimizer.param_groups):
        raise ValueError("step_unless needs a fused optimizer (mouse.optim.fused_adam): only "
                         "the fused kernels read found_inf")
    optimizer.found_inf = skip
    try:
        optimizer.step()
    finally:  # a stale flag would silently govern the next plain step()
        del optimizer.found_inf
