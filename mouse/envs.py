"""Gymnasium environments as the actors and the evaluator see them.

Every env of a run is made here, so the ids mouse adds are always registered:
``mouse/...`` tasks and the ALE ids (``mouse.env_ids``: ale-py imported on first
use); ALE ids get the Atari preset (``mouse.atari``).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

from mouse import env_ids
from mouse.config import EnvConfig
from mouse.envpool_vector import EnvPoolVector
from mouse.records import RecordSpec, record_spec_for_env

REWARD_TRANSFORMS = {
    "auto": lambda r: r,  # identity; RunConfig turns auto into sign under the Atari preset
    "identity": lambda r: r,
    "sign": torch.sign,
    "symlog": lambda r: torch.sign(r) * torch.log1p(r.abs()),
}


@dataclass(frozen=True)
class EnvInfo:
    """What the learner and actors need to know about an env before building a model."""

    spec: RecordSpec
    num_env_actions: int  # the env's own action count (<= spec.num_actions)
    q_star_table: torch.Tensor | None  # [spec.num_obs_states, A] when the env has a transition table


def make_env(cfg: EnvConfig, **extra) -> gym.Env:
    kwargs, wrappers = env_ids.make_args(cfg)
    try:
        env = gym.make(cfg.env_id, **kwargs, **extra)
    except Exception as e:  # the env's own code: any error is a bad id or bad kwargs
        raise env_ids.env_error(cfg, e) from None
    for wrap in wrappers:
        env = wrap(env)
    return env


def make_vector_env(cfg: EnvConfig, num_envs: int | None = None, wrappers=(),
                    **extra) -> gym.vector.VectorEnv:
    """A synchronous vector env with NEXT_STEP autoreset (the record alignment relies on it).

    ``wrappers``: applied to each sub-env after the preset's (e.g. a video recorder);
    ``extra``: more arguments of ``gymnasium.make`` (``render_mode``).
    ``cfg.vector`` envpool: an ``EnvPoolVector`` instead, unless wrappers or extras ask for
    gymnasium's sub-envs (the evaluator's video).
    """
    n = cfg.num_envs if num_envs is None else num_envs
    if cfg.vector == "envpool" and not wrappers and not extra:
        return EnvPoolVector(cfg.env_id, n)
    kwargs, preset = env_ids.make_args(cfg)
    try:
        return gym.make_vec(
            cfg.env_id,
            num_envs=n,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP},
            wrappers=[*preset, *wrappers] or None,
            **kwargs,
            **extra,
        )
    except Exception as e:
        raise env_ids.env_error(cfg, e) from None


def reward_threshold(cfg: EnvConfig) -> float | None:
    """The return at which gymnasium's registry calls the env solved (None when it names none)."""
    try:
        return gym.spec(cfg.env_id).reward_threshold
    except gym.error.Error:
        return None


def describe_env(cfg: EnvConfig) -> EnvInfo:
    """Probe the env once: record spec, action count and (when asked) the exact q_star table."""
    from mouse.qstar import has_transition_table, q_star_table

    env = make_env(cfg)
    try:
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(
                f"env {cfg.env_id!r} has action space {env.action_space}: mouse needs Discrete actions"
            )
        n = int(env.action_space.n)
        num_actions = cfg.num_actions or n
        has_table = has_transition_table(env)
        if cfg.q_star == "on" and not has_table:
            raise ValueError(
                f"env.q_star='on' but {cfg.env_id!r} exposes no transition table "
                "(supported: FrozenLake, CliffWalking, Taxi); use env.q_star=auto or off"
            )
        use_q = has_table and cfg.q_star != "off"
        table = q_star_table(env, cfg.q_star_gamma, num_actions=num_actions) if use_q else None
        spec = record_spec_for_env(env.observation_space, env.action_space, num_actions, q_star=use_q)
        return EnvInfo(spec, n, table)
    finally:
        env.close()
