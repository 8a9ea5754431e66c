"""Starting a learner: resume keeps the run's config, failed starts leave nothing, errors are one line.

Each case goes through the command (``mouse.cli.main``) in this process, with real
envs, a real model and real sockets; none of them gets as far as training.
"""

from __future__ import annotations

import json

import pytest
import torch
import zmq

from learner.checkpoint import save_checkpoint
from learner.resume import RESUMABLE, config_changes, refuse_changes
from mouse.cli import main
from mouse.components import build_model
from mouse.config import BudgetConfig, EnvConfig, RunConfig, load_config, save_config
from mouse.envs import describe_env
from mouse.train import make_optimizer
from mouse.transport import free_port_base

SMALL = ["--wandb.mode", "disabled", "--model.hidden-dim", "16", "--budget.max-minutes", "0.05"]


def start_error(*argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return str(e.value.code)


def a_run(run_dir, cfg: RunConfig) -> dict[str, bytes]:
    """A run directory as a run leaves it (config.json, a checkpoint); returns its files' bytes."""
    run_dir.mkdir(parents=True)
    save_config(cfg, run_dir / "config.json")
    model = build_model(cfg, describe_env(cfg.env))
    save_checkpoint(run_dir / "checkpoint.pt", model, make_optimizer(model, cfg.train), cfg,
                    version=3, updates=30, env_steps=300, wall_s=12.0, best_eval_return=0.5)
    return {p.name: p.read_bytes() for p in run_dir.iterdir()}


def test_resume_refuses_a_model_or_env_change_before_writing_anything(tmp_path):
    """The reported accident: a FrozenLake run resumed with CartPole flags lost its config.json."""
    run_dir = tmp_path / "run"
    saved = RunConfig(env=EnvConfig(env_id="FrozenLake-v1"), run_dir=str(run_dir))
    before = a_run(run_dir, saved)
    for flags, field in ([["--env.env-id", "CartPole-v1"], "env.env_id"],
                         [["--model.hidden-dim", "64"], "model.hidden_dim"],
                         [["--config", str(tmp_path / "cartpole.json")], "env.env_id"]):
        save_config(RunConfig(), tmp_path / "cartpole.json")
        line = start_error("learner", "--run-dir", str(run_dir), *flags, *SMALL)
        assert line.startswith("error: ") and "\n" not in line and field in line, line
        assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before, "the run was touched"


def test_resume_allows_budget_logging_and_learner_settings():
    saved = RunConfig(env=EnvConfig(env_id="FrozenLake-v1"))
    new = RunConfig(env=EnvConfig(env_id="FrozenLake-v1"), budget=BudgetConfig(max_env_steps=5),
                    num_actors=4)
    refuse_changes("run", saved, new)  # no error
    assert config_changes(saved, new) == {"budget.max_env_steps": (300_000, 5), "num_actors": (2, 4)}
    assert config_changes(saved, saved) == {}  # nan == nan here (budget.solved_return defaults to nan)
    assert "env" not in RESUMABLE and "model" not in RESUMABLE and "train" not in RESUMABLE


def test_a_checkpoint_of_another_model_is_one_line(tmp_path):
    """A run directory with a checkpoint but no config.json: the checkpoint's config decides."""
    run_dir = tmp_path / "run"
    a_run(run_dir, RunConfig(run_dir=str(run_dir)))
    (run_dir / "config.json").unlink()
    line = start_error("learner", "--run-dir", str(run_dir), "--model.hidden-dim", "64", *SMALL)
    assert line.startswith("error: ") and "model.hidden_dim" in line, line


@pytest.mark.parametrize("flags, field", [
    (["--env.env-id", "NoSuchEnv-v0"], "env.env_id"),
    (["--env.env-id", "FrozenLake-v1", "--env.env-kwargs", '{"map": "8x8"}'], "env.env_kwargs"),
    (["--env.env-id", "FrozenLake-v1", "--env.env-kwargs", '{"map_name": "9x9"}'], "env.env_kwargs"),
    (["--env.env-id", "Pendulum-v1"], "Discrete"),
    (["--train.sp.weight", "1"], "q_star"),
])
def test_a_bad_env_is_one_line_and_leaves_no_run_directory(tmp_path, flags, field):
    run_dir = tmp_path / "runs" / "new"
    line = start_error("learner", "--run-dir", str(run_dir), *flags, *SMALL)
    assert line.startswith("error: ") and "\n" not in line and field in line, line
    assert not run_dir.exists()


def test_a_port_in_use_leaves_no_run_directory_but_keeps_one_it_did_not_make(tmp_path):
    port = free_port_base()
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.PULL)
    squatter.bind(f"tcp://127.0.0.1:{port}")
    try:
        for run_dir in (tmp_path / "new", tmp_path / "existing"):
            if run_dir.name == "existing":
                run_dir.mkdir()
            line = start_error("learner", "--run-dir", str(run_dir), "--learner.port", str(port), *SMALL)
            assert line.startswith("error: ") and f"127.0.0.1:{port}" in line, line
        assert not (tmp_path / "new").exists()
        existing = tmp_path / "existing"
        assert existing.is_dir() and not (existing / "config.json").exists()  # nothing of the run
    finally:
        squatter.close(0)
        ctx.term()


def test_port_zero_is_the_default_and_the_address_is_published(tmp_path):
    """No --learner.port: free ports; the address is in the status file (the run stops at once)."""
    run_dir = tmp_path / "run"
    main(["learner", "--run-dir", str(run_dir), "--budget.max-env-steps", "1", "--eval.episodes", "1",
          *SMALL])
    status = json.loads((run_dir / "status.json").read_text())
    assert status["address"].startswith("tcp://127.0.0.1:") and not status["address"].endswith(":0")
    assert status["state"] == "finished"
    assert load_config(run_dir / "config.json").learner.port == 0
    # the run's target came from the env: CartPole-v1 registers 475
    assert load_config(run_dir / "config.json").budget.solved_return == 475.0
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["updates"] == 0
