"""``--env.vector envpool``: the actor's stepping on EnvPool's vector env, and its clear errors."""

from __future__ import annotations

import pytest
import torch

import mouse.envpool_vector
from mouse.config import ActorConfig, EnvConfig
from mouse.envs import describe_env, make_vector_env
from mouse.records import validate_records

from .test_stepper import make_stepper, run_config


def test_envpool_chunks_are_valid_consecutive_records_with_their_episodes():
    pytest.importorskip("envpool")
    cfg = run_config(env=EnvConfig(num_envs=4, vector="envpool"),
                     actor=ActorConfig(epsilon=1.0, chunk_steps=60))
    stepper, _ = make_stepper(cfg)
    for _ in range(2):  # two chunks: the second continues every stream of the first
        while not stepper.ready():
            stepper.step()
        chunk, episodes = stepper.take()
        validate_records(chunk, describe_env(cfg.env).spec)  # NEXT_STEP alignment, continuity
        done = chunk["done"].reshape(4, -1)  # [N, K]
        assert episodes and len(episodes) == int((done != 0).sum())
        for e in episodes:  # CartPole pays 1 per step: return == length
            assert e["return"] == e["length"] > 0
        restarts = chunk["time"].reshape(4, -1)[:, 1:] == 0  # after every episode end, a reset
        assert torch.equal(restarts, done[:, :-1] != 0)


def test_envpool_reset_with_a_seed_replays_the_same_episodes():
    pytest.importorskip("envpool")
    env = make_vector_env(EnvConfig(num_envs=3, vector="envpool"))
    first = env.reset(seed=5)[0]
    env.step([1, 1, 1])
    assert (env.reset(seed=5)[0] == first).all() and not (env.reset(seed=6)[0] == first).all()
    env.close()


def test_envpool_missing_or_unfit_is_one_line_naming_the_field(monkeypatch):
    with pytest.raises(ValueError, match="env.vector=envpool takes no env.env_kwargs"):
        EnvConfig(env_id="FrozenLake-v1", env_kwargs='{"is_slippery": false}', vector="envpool")
    monkeypatch.setattr(mouse.envpool_vector, "available", lambda: False)  # as where it is not installed
    with pytest.raises(ValueError, match="env.vector: envpool is not installed"):
        make_vector_env(EnvConfig(vector="envpool"))
    assert make_vector_env(EnvConfig(num_envs=2)).num_envs == 2  # the default needs no envpool
