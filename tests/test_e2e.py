"""The whole system, for real: `mouse run` with 2 actor processes over TCP on loopback.

(Resume, early actors and the replay-ratio gate are covered in one process by test_inproc.py.)"""

import json
import os
import subprocess
import sys

import torch

from mouse.components import build_model
from mouse.config import RunConfig, from_dict
from mouse.envs import describe_env
from tests.run_helpers import small_run_flags
from learner.wandb_files import history

NUM_ENVS = 3


def run_mouse(run_dir, *flags, timeout=300):
    cmd = [
        sys.executable, "-m", "mouse", "run",
        "--run-dir", str(run_dir),
        "--learner.port", "0",  # three free ports
        "--num-actors", "2",
        *small_run_flags(NUM_ENVS, wandb="offline"),
        *flags,
    ]
    env = {**os.environ, "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_mouse_run_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_mouse(run_dir, "--budget.max-env-steps", "4000", "--budget.max-minutes", "3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "mouse run finished" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())

    # records from both actors and every one of their streams
    assert summary["actors_seen"] == [0, 1]
    assert summary["streams_seen"] == list(range(2 * NUM_ENVS))
    assert summary["env_steps"] >= 4000
    # the learner trained, published, and actors acted with published weights
    assert summary["updates"] > 0
    assert summary["weights_version"] > 1
    assert all(v > 0 for v in summary["actor_versions"].values()), summary["actor_versions"]
    assert summary["rejected"] == {}

    # the W&B offline files hold the loss metrics and episode returns
    rows = history(run_dir)
    keys = set().union(*rows)
    for k in ("loss/dqn/dqn_loss", "loss/dqn/q_values_mean", "loss/total", "episode/return",
              "perf/env_steps_per_s", "perf/updates_per_s", "replay/size", "actors/connected",
              "actors/policy_lag", "eval/return"):
        assert k in keys, f"{k} not logged; logged: {sorted(keys)}"
    assert any(r.get("episode/return", 0) > 0 for r in rows)

    # shutdown left a checkpoint that loads (weights_only) into a model built from its config
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = from_dict(RunConfig, state["config"])
    model = build_model(cfg, describe_env(cfg.env))
    model.load_state_dict(state["model"])
    assert state["updates"] == summary["updates"] and state["version"] == summary["weights_version"]


def test_bad_config_is_a_clear_error(tmp_path):
    proc = run_mouse(tmp_path / "r", "--env.env-id", "NoSuchEnv-v0", timeout=60)
    assert proc.returncode != 0
    assert "NoSuchEnv-v0" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_mouse(tmp_path / "r2", "--train.sp.weight", "1.0", timeout=60)
    assert proc.returncode != 0 and "q_star" in proc.stderr and "Traceback" not in proc.stderr
