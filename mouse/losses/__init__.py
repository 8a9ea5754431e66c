"""Loss functions: pure ``(step_stream, outputs, cfg) -> (loss, metrics)``.

Contract: /work/shared/spec/losses-api.txt; masking and alignment: DESIGN.md.

The config dataclasses (``mouse.losses.config``) import without torch; the loss
functions are loaded on first use, so that reading a run's config (``mouse
--help``) does not pay for importing torch.
"""

from mouse.lazy import lazy_exports
from mouse.losses.config import DqnLossConfig, SpLossConfig, SvLossConfig, VecDqnLossConfig

_LAZY = {
    "dqn_loss": "mouse.losses.dqn",
    "sp_loss": "mouse.losses.sp",
    "sv_loss": "mouse.losses.sv",
    "vec_dqn_loss": "mouse.losses.vec_dqn",
    "rope_rotate": "mouse.losses.vec_dqn",
    "vec_dqn_scores": "mouse.losses.vec_dqn",
}

__all__ = [
    "DqnLossConfig",
    "dqn_loss",
    "SpLossConfig",
    "sp_loss",
    "SvLossConfig",
    "sv_loss",
    "VecDqnLossConfig",
    "vec_dqn_loss",
    "rope_rotate",
    "vec_dqn_scores",
]


__getattr__ = lazy_exports(__name__, _LAZY)
