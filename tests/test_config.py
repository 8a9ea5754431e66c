"""Run configuration: JSON round trip, validation, and the CLI's --config file."""

import json
import math

import pytest

from mouse.cli import _split_config_flag
from mouse.config import (
    BudgetConfig, EnvConfig, LearnerConfig, RunConfig, from_dict, load_config, save_config, to_dict,
)


def test_round_trip_keeps_inf_and_nested_values(tmp_path):
    cfg = RunConfig(env=EnvConfig(env_id="FrozenLake-v1", env_kwargs='{"map_name": "8x8"}'),
                    budget=BudgetConfig(solved_return=math.inf), num_actors=3)
    text = json.dumps(to_dict(cfg), allow_nan=False)  # what the wire sends in a welcome
    assert from_dict(RunConfig, json.loads(text)) == cfg
    save_config(cfg, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == cfg


def test_unknown_keys_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config keys \['nope'\]"):
        from_dict(RunConfig, {"nope": 1})
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.json")


@pytest.mark.parametrize("kwargs, message", [
    ({"replay_ratio": 0}, "learner.replay_ratio=0 \\(must be > 0\\)"),
    ({"credits_per_actor": 0}, "credits_per_actor=0"),
    ({"warmup_steps": -1}, "warmup_steps=-1 \\(must be >= 0\\)"),
    ({"port": 65535}, "learner.port=65535"),
])
def test_bad_learner_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LearnerConfig(**kwargs)


def test_bad_env_config():
    with pytest.raises(ValueError, match="env_kwargs must be a JSON object"):
        EnvConfig(env_kwargs="map_name=8x8")
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        EnvConfig(num_envs=0)


def test_config_flag_sets_defaults_that_flags_override(tmp_path):
    saved = RunConfig(num_actors=5, env=EnvConfig(num_envs=3))
    save_config(saved, tmp_path / "c.json")
    base, rest = _split_config_flag(["--config", str(tmp_path / "c.json"), "--num-actors", "1"])
    assert base == saved and rest == ["--num-actors", "1"]
    base, rest = _split_config_flag([f"--config={tmp_path / 'c.json'}"])
    assert base == saved and rest == []


def test_acting_policies_are_the_registry_heads_that_can_act():
    import typing

    from mouse.config import ActorConfig
    from mouse.heads import policy_names

    hints = typing.get_type_hints(ActorConfig)
    assert set(typing.get_args(hints["policy"])) == set(policy_names())


def test_run_config_uses_the_train_config_defaults():
    from mouse.config import RunConfig
    from mouse.train import TrainConfig

    assert RunConfig().train == TrainConfig()  # one set of training defaults


def test_chunk_limit_matches_the_wire():
    """mouse.config keeps its own copy of the wire's record limit (it imports without torch)."""
    from mouse import config, wire

    assert config.MAX_CHUNK_RECORDS == wire.DEFAULT_MAX_RECORDS
