"""Loss functions: pure ``(step_stream, outputs, cfg) -> (loss, metrics)``.

Contract: /work/shared/spec/losses-api.txt; masking and alignment: DESIGN.md.
"""

from mouse.losses.dqn import DqnLossConfig, dqn_loss
from mouse.losses.sp import SpLossConfig, sp_loss
from mouse.losses.sv import SvLossConfig, sv_loss
from mouse.losses.vec_dqn import VecDqnLossConfig, rope_rotate, vec_dqn_loss, vec_dqn_scores

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
