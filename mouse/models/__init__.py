"""The MOUSE model: step embedder -> mlp/transformer backbone -> dqn, vec_dqn, sp, sv heads."""

from .act import POLICIES, heads_for, select_action
from .config import BACKBONES, HEADS, TARGET_HEADS, ModelConfig
from .model import MouseModel

__all__ = [
    "BACKBONES",
    "HEADS",
    "POLICIES",
    "TARGET_HEADS",
    "ModelConfig",
    "MouseModel",
    "heads_for",
    "select_action",
]
