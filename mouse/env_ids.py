"""Env ids, known without torch: every id a run can name is registered here before use
(``mouse/...`` tasks on import, ALE ids on demand), so the CLI refuses a misspelt id or
keyword arguments the env does not take at once, instead of after the learner's imports
(``mouse.envs`` makes the envs, with ``make_args`` and ``env_error`` from here).
"""

from __future__ import annotations

import importlib.util

import gymnasium as gym

import mouse.tasks  # noqa: F401  (registers the mouse/ ids in every process that makes envs)
from mouse import atari
from mouse.config import ALE_NAMESPACE, EnvConfig


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


def check_env(cfg: EnvConfig) -> None:
    """``check_env_id``, then, when the run gives the env keyword arguments, make it once
    (its constructor is what checks them): ValueError naming ``env.env_kwargs`` if it refuses."""
    check_env_id(cfg.env_id)
    if not cfg.kwargs():
        return
    kwargs, _ = make_args(cfg)
    try:
        gym.make(cfg.env_id, **kwargs).close()
    except Exception as e:  # the env's own code: any error is a bad id or bad kwargs
        raise env_error(cfg, e) from None


def make_args(cfg: EnvConfig) -> tuple[dict, list]:
    """(gymnasium.make kwargs, wrappers innermost first) of the env ``cfg`` names."""
    register(cfg.env_id)
    if cfg.atari_preset_applies:
        return atari.preset_kwargs(cfg), atari.preset_wrappers(cfg)
    return cfg.kwargs(), []


def env_error(cfg: EnvConfig, e: Exception) -> ValueError:
    """One line naming the field at fault: the id, or the keyword arguments the env refused."""
    if isinstance(e, gym.error.Error) or not cfg.kwargs():
        return ValueError(f"env.env_id: cannot make env {cfg.env_id!r}: {e}")
    # an env's constructor rejects unknown or bad keywords with TypeError, KeyError, ValueError...
    return ValueError(f"env.env_kwargs: {cfg.env_id!r} does not accept {cfg.env_kwargs}: "
                      f"{type(e).__name__}: {e}")
