"""Greedy evaluation of a model: one episode in each of ``episodes`` parallel sub-envs."""

from __future__ import annotations

import torch

from mouse.acting import ActingPolicy
from mouse.config import EnvConfig
from mouse.envs import EnvInfo, make_vector_env
from mouse.records import StreamRecorder


@torch.inference_mode()
def evaluate(model, env_cfg: EnvConfig, info: EnvInfo, policy: str, context_len: int,
             episodes: int = 20, max_steps: int = 10_000, seed: int = 12345) -> dict[str, float]:
    """Mean return/length of ``episodes`` episodes with epsilon 0 (sp still samples)."""
    env = make_vector_env(env_cfg, num_envs=episodes)
    try:
        recorder = StreamRecorder(info.spec, torch.arange(episodes), info.num_env_actions,
                                  q_star_table=info.q_star_table)
        acting = ActingPolicy(model, policy, context_len, epsilon=0.0, seed=seed)
        obs, _ = env.reset(seed=seed)
        rec = recorder.reset(obs)
        returns = torch.zeros(episodes)
        lengths = torch.zeros(episodes, dtype=torch.int64)
        finished = torch.zeros(episodes, dtype=torch.bool)
        for _ in range(max_steps):
            action = acting.act(rec)
            obs, reward, term, trunc, _ = env.step(action.numpy())
            rec = recorder.step(action, obs, reward, term, trunc)
            live = ~finished
            returns += rec["reward"] * live
            lengths += live.long()
            finished |= rec["done"] != 0
            if bool(finished.all()):
                break
        done = finished if bool(finished.any()) else torch.ones_like(finished)
        return {
            "eval/return": float(returns[done].mean()),
            "eval/return_min": float(returns[done].min()),
            "eval/length": float(lengths[done].float().mean()),
            "eval/episodes": float(done.sum()),
        }
    finally:
        env.close()
