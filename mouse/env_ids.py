"""Env ids, known without torch: every id a run can name is registered here before use
(``mouse/...`` tasks on import, ALE ids on demand), so the CLI refuses a misspelt id at
once instead of after the learner's imports (``mouse.envs`` makes the envs).
"""

from __future__ import annotations

import importlib.util

import gymnasium as gym

import mouse.tasks  # noqa: F401  (registers the mouse/ ids in every process that makes envs)
from mouse import atari
from mouse.config import ALE_NAMESPACE


def register(env_id: str) -> None:
    """Register ``env_id`` with gymnasium where ale-py provides it: ALE/ ids, and ale-py's
    other ids (PongNoFrameskip-v4, ...) when ale-py is installed."""
    if env_id.startswith(ALE_NAMESPACE):
        atari.register_ale(env_id)  # a clear error when ale-py is missing
    elif env_id not in gym.registry and importlib.util.find_spec("ale_py") is not None:
        atari.register_ale(env_id)


def check_env_id(env_id: str) -> None:
    """ValueError naming ``env.env_id`` unless gymnasium knows the id (its keyword arguments
    are only checked when the env is made)."""
    register(env_id)
    try:
        gym.spec(env_id)
    except gym.error.Error as e:
        raise ValueError(f"env.env_id: cannot make env {env_id!r}: {e}") from None
