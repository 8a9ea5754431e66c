"""Evaluation with every head that acts, and `mouse eval` on a run's saved weights.

The heads are scored against ground truth: a stand-in model whose dqn head *is*
FrozenLake's exact q_star (so it acts optimally) and whose sp head prefers the
worst actions. Real envs, real recorder and acting code.
"""

from __future__ import annotations

import zlib
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv
from tensordict import TensorDict

from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.eval_run import eval_run, png_bytes
from learner.evaluation import acting_heads, binary_goal_reward, evaluate, optimal_agreement
from mouse.components import build_model
from mouse.config import EnvConfig, RunConfig, TrainConfig
from mouse.envs import describe_env
from mouse.losses import SpLossConfig

LAKE = EnvConfig(env_id="FrozenLake-v1")
EPISODES = 64


class QStarModel(torch.nn.Module):
    """dqn = q_star (optimal when greedy); sp logits = -10 q_star (mostly the worst actions)."""

    cfg = SimpleNamespace(backbone="mlp")

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.spec = SimpleNamespace(num_actions=table.shape[1])  # what acting reads of a model's spec

    def forward(self, td, last_only=True):
        q = self.table[td["obs_discrete"][:, -1]]  # [N, A]
        return TensorDict({"dqn": q, "sp": -10 * q}, batch_size=q.shape[:1])


@pytest.fixture(scope="module")
def lake():
    info = describe_env(LAKE)
    return info, QStarModel(info.q_star_table)


def test_each_head_is_scored_and_the_acting_one_is_eval_return(lake):
    info, model = lake
    kw = dict(env_cfg=LAKE, info=info, context_len=1, episodes=EPISODES, binary_goal=True)
    m = evaluate(model, ("dqn", "sp"), **kw)
    assert m["eval/dqn/q_star_agreement"] == 1.0  # greedy on q_star is optimal at every step
    assert m["eval/sp/q_star_agreement"] < 0.5
    # FrozenLake pays 1 at the goal only: the mean return is the success rate
    assert m["eval/dqn/success_rate"] == m["eval/dqn/return"] > 0.4  # optimal: about 0.7-0.8
    assert m["eval/sp/success_rate"] < m["eval/dqn/success_rate"]
    assert m["eval/return"] == m["eval/dqn/return"] and m["eval/episodes"] == EPISODES
    # the acting head comes first and is the one eval/return reports
    m_sp = evaluate(model, ("sp", "dqn"), **kw)
    assert m_sp["eval/return"] == m_sp["eval/sp/return"] and m_sp["eval/dqn/return"] == m["eval/dqn/return"]


def test_acting_heads_lists_the_actors_head_first_and_never_sv():
    assert acting_heads(("dqn", "sp", "sv"), "sp") == ("sp", "dqn")
    assert acting_heads(("dqn",), "dqn") == ("dqn",)
    assert acting_heads(("dqn", "vec_dqn"), "dqn") == ("dqn", "vec_dqn")


def test_success_rate_only_for_a_zero_one_goal_reward():
    assert binary_goal_reward(LAKE)
    assert not binary_goal_reward(EnvConfig(env_id="CliffWalking-v1"))  # -1 per step, -100 cliff
    assert not binary_goal_reward(EnvConfig())  # CartPole: no transition table


def test_optimal_agreement_forgives_ties_and_ignores_invalid_actions():
    q = torch.tensor([[1.0, 1.0, 0.0], [0.5, float("-inf"), 0.2], [0.0, 0.0, 0.0]])
    scores = torch.tensor([[0.0, 2.0, 1.0], [0.0, 9.0, 1.0], [3.0, 1.0, 2.0]])
    assert optimal_agreement(scores, q).tolist() == [True, False, True]


# --- mouse eval on a run directory ------------------------------------------------------------------

class PlainFrozenLake(FrozenLakeEnv):
    """FrozenLake whose rgb_array frames need no pygame: one grey level per state."""

    def render(self):
        return np.full((8, 8, 3), 16 * int(self.s), dtype=np.uint8)


PLAIN = "MousePlainFrozenLake-v0"
if PLAIN not in gym.registry:
    gym.register(PLAIN, entry_point=PlainFrozenLake, max_episode_steps=100)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with best.pt: dqn and sp heads (random weights), actors acting with dqn."""
    d = tmp_path_factory.mktemp("run")
    cfg = RunConfig(env=EnvConfig(env_id=PLAIN), train=TrainConfig(sp=SpLossConfig(weight=1.0)))
    model = build_model(cfg, describe_env(cfg.env))
    save_checkpoint(d / "best.pt", model, None, cfg, version=4, updates=40, env_steps=400,
                    eval_return=0.0, eval_head="dqn")
    return d


def test_mouse_eval_reports_the_chosen_head(run_dir):
    m = eval_run(run_dir, episodes=8, head="sp")
    assert m["episodes"] == 8 and 0 <= m["success_rate"] <= 1 and 0 <= m["q_star_agreement"] <= 1
    assert m["return_min"] <= m["return"] <= m["return_max"]
    acting = eval_run(run_dir, episodes=8)  # the run's actor.policy: dqn
    assert acting["return"] == eval_run(run_dir, episodes=8, head="dqn")["return"]  # same seed


def test_mouse_eval_refuses_what_the_run_does_not_have(run_dir):
    with pytest.raises(ValueError, match="head: this run has no vec_dqn head; the heads that can act are dqn, sp"):
        eval_run(run_dir, episodes=2, head="vec_dqn")
    with pytest.raises(ValueError, match="has no checkpoint.pt"):
        eval_run(run_dir, episodes=2, checkpoint="last")
    with pytest.raises(ValueError, match="is not a directory"):
        eval_run(run_dir / "nope", episodes=2)


def test_mouse_eval_films_the_first_episodes(run_dir, tmp_path):
    eval_run(run_dir, episodes=4, head="dqn", video=str(tmp_path / "video"))
    films = sorted((tmp_path / "video").glob("dqn-*"))
    assert len(films) == 3, films  # the first 3 episodes
    for film in films:
        if film.suffix == ".mp4":  # moviepy installed: gymnasium's RecordVideo
            assert film.stat().st_size > 0
            continue
        frames = sorted(film.glob("frame-*.png"))  # no moviepy: PNG frames
        assert frames and frames[0].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_png_bytes_round_trip():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = png_bytes(img)
    assert data[12:16] == b"IHDR" and int.from_bytes(data[16:20], "big") == 3  # width
    idat = data.index(b"IDAT")
    raw = zlib.decompress(data[idat + 4:idat + 4 + int.from_bytes(data[idat - 4:idat], "big")])
    rows = [raw[i * 10 + 1:(i + 1) * 10] for i in range(2)]  # filter byte, then 3 x RGB
    assert np.frombuffer(b"".join(rows), np.uint8).reshape(2, 3, 3).tolist() == img.tolist()


def test_best_pt_layout(run_dir):
    state = load_checkpoint(run_dir / "best.pt")
    assert {"model", "config", "version", "updates", "env_steps", "eval_return", "eval_head"} <= set(state)
    assert "optimizer" not in state
