"""Atari (ALE) environments with the standard preprocessing, as a preset of ``EnvConfig``.

Ids in the ``ALE/`` namespace (``ALE/Pong-v5``) get, unless ``env.atari_preset``
is off, the preprocessing of Mnih et al. (2015) as revised by Machado et al.
(2018), through gymnasium's ``AtariPreprocessing``:

* frame skip 4 with max-pooling over the last two frames: the ALE env is made
  with ``frameskip=1`` and the wrapper skips (one agent step = 4 frames);
* up to ``atari_noop_max`` (30) no-op actions after each reset;
* sticky actions: the id's own ``repeat_action_probability`` (0.25 for v5 ids),
  applied by the emulator on every frame, as v5 does with its own frame skip;
* 84x84 grayscale frames, one per step: ``[84, 84]`` uint8, stored as one
  ``[84, 84, 1]`` image record. No frame stacking: the model's window of S
  records is the agent's history (``atari_frame_stack`` > 1 stacks frames on
  the channel axis, ``[84, 84, k]``, for the mlp backbone, which sees one record);
* optionally a life lost ends the episode (``atari_terminal_on_life_loss``);
* reward clipping: ``env.reward_transform`` "auto" becomes "sign" and the TD
  losses read ``xformed_reward`` (``RunConfig`` resolves it; the raw score stays
  in ``reward``, so episode and evaluation returns are game scores).

ale-py is an optional extra (``pip install 'mouse[atari]'``); it registers the
ALE ids with gymnasium when imported, which ``register_ale`` does on demand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from mouse.config import EnvConfig

INSTALL_HINT = "install the Atari extra: pip install 'mouse[atari]' (ale-py and opencv-python-headless)"


def register_ale(env_id: str) -> None:
    """Import ale-py so that its ids are registered with gymnasium; a clear error when it is missing."""
    try:
        import ale_py
    except ImportError:
        raise ValueError(f"env {env_id!r} needs ale-py: {INSTALL_HINT}") from None
    gym.register_envs(ale_py)


def preset_kwargs(cfg: "EnvConfig") -> dict:
    """gymnasium.make keyword arguments of a preset env: the user's, with the emulator's frame skip off."""
    kw = cfg.kwargs()
    if kw.get("frameskip", 1) != 1:
        raise ValueError(f"env.env_kwargs sets frameskip={kw['frameskip']!r} but env.atari_preset "
                         "skips frames itself: drop frameskip, or turn the preset off (--env.no-atari-preset)")
    return {**kw, "frameskip": 1}


def preset_wrappers(cfg: "EnvConfig") -> list[Callable[[gym.Env], gym.Env]]:
    """The wrappers of the preset, innermost first (as ``gymnasium.make_vec(wrappers=...)`` takes them)."""
    try:
        import cv2  # noqa: F401  (AtariPreprocessing resizes with it)
    except ImportError:
        raise ValueError(f"env.atari_preset needs opencv for the 84x84 resize: {INSTALL_HINT}") from None

    def preprocess(env: gym.Env) -> gym.Env:
        return gym.wrappers.AtariPreprocessing(
            env, noop_max=cfg.atari_noop_max, frame_skip=4, screen_size=84,
            terminal_on_life_loss=cfg.atari_terminal_on_life_loss, grayscale_obs=True,
            grayscale_newaxis=False, scale_obs=False)

    wrappers = [preprocess]
    if cfg.atari_frame_stack > 1:
        wrappers.append(lambda env: stack_frames(env, cfg.atari_frame_stack))
    return wrappers


def stack_frames(env: gym.Env, k: int) -> gym.Env:
    """[H, W] frames -> the last k of them on the channel axis, [H, W, k] (an image record)."""
    stacked = gym.wrappers.FrameStackObservation(env, k)  # [k, H, W], padded with the reset frame
    h, w = env.observation_space.shape
    space = gym.spaces.Box(0, 255, (h, w, k), np.uint8)
    return gym.wrappers.TransformObservation(stacked, lambda o: np.moveaxis(o, 0, -1), space)
