"""The MOUSE model: step embedder -> mlp/transformer backbone -> dqn, vec_dqn, sp, sv heads.

``ModelConfig`` imports without torch; the model and acting functions are loaded
on first use (the run config, and ``mouse --help``, need only the config).
"""

from mouse.lazy import lazy_exports
from .config import BACKBONES, HEADS, TARGET_HEADS, ModelConfig

_LAZY = {"POLICIES": ".act", "explore": ".act", "heads_for": ".act", "select_action": ".act",
         "MouseModel": ".model"}

__all__ = [
    "BACKBONES",
    "HEADS",
    "POLICIES",
    "TARGET_HEADS",
    "ModelConfig",
    "MouseModel",
    "explore",
    "heads_for",
    "select_action",
]


__getattr__ = lazy_exports(__name__, _LAZY)
