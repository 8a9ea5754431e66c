"""Fake step-record windows for model and train-step tests (and the benchmark)."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from mouse.records import RecordSpec

NUM_OBS_STATES = 16  # discrete-observation specs below draw states from 0..15


def spec_for(kind: str, num_actions: int = 3, q_star: bool = False,
             action_mask: bool = False) -> RecordSpec:
    shape = {"continuous": (4,), "discrete": (), "image": (8, 8, 3)}[kind]
    return RecordSpec(kind, shape, num_actions, q_star=q_star, action_mask=action_mask)


def make_batch(spec: RecordSpec, batch: int, seq: int, seed: int = 0,
               episode_len: int = 5, device: str | torch.device = "cpu") -> TensorDict:
    """TensorDict[B, S] of contract-abiding windows: episodes of ``episode_len`` steps.

    Each row starts at a random offset into an episode; the record at an episode's
    last step is terminal, the next one is a reset (time 0, action 0, reward 0).
    With ``spec.action_mask`` the last action is masked out (and -inf in q_star).
    """
    g = torch.Generator().manual_seed(seed)
    b, s, a = batch, seq, spec.num_actions
    offset = torch.randint(0, episode_len, (b, 1), generator=g)
    time = (offset + torch.arange(s)) % episode_len  # [B, S]
    done = (time == episode_len - 1).long()
    first = time == 0
    action = torch.randint(0, a, (b, s), generator=g).masked_fill(first, 0)
    reward = torch.randn(b, s, generator=g).masked_fill(first, 0.0)
    if spec.obs_kind == "continuous":
        obs = torch.randn(b, s, *spec.obs_shape, generator=g)
    elif spec.obs_kind == "discrete":
        obs = torch.randint(0, NUM_OBS_STATES, (b, s), generator=g)
    else:
        obs = torch.randint(0, 256, (b, s, *spec.obs_shape), generator=g).to(torch.uint8)
    td = {
        spec.obs_key: obs,
        "action": action,
        "reward": reward,
        "xformed_reward": reward.clone(),
        "done": done,
        "time": time,
        "stream_id": torch.arange(b).unsqueeze(1).expand(b, s).clone(),
        "policy_version": torch.zeros(b, s, dtype=torch.long),
    }
    mask = torch.ones(b, s, a, dtype=torch.bool)
    if spec.action_mask and a > 1:
        mask[..., -1] = False
    if spec.action_mask:
        td["action"] = action.clamp(max=max(a - 2, 0))
        td["action_mask"] = mask
    if spec.q_star:
        td["q_star"] = torch.randn(b, s, a, generator=g).masked_fill(~mask, float("-inf"))
    return TensorDict(td, batch_size=[b, s]).to(device)
