"""Step embedder: one record -> one vector of size hidden_dim.

Record t holds obs_t together with the action, reward and done that produced it,
so its own ``action``/``reward`` fields are the *previous* action and reward: the
embedding of step t sees what the agent did last and what it got for it.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

from mouse.records import RecordSpec

from .config import ModelConfig


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x)·log(1+|x|): keeps reward inputs O(1) whatever the env's reward scale."""
    return torch.sign(x) * torch.log1p(x.abs())


class ImageEncoder(nn.Module):
    """uint8 [N, H, W, C] -> [N, out_dim]: stride-2 3x3 convs, then a linear."""

    def __init__(self, obs_shape: tuple[int, ...], channels: tuple[int, ...], out_dim: int):
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"image observations are [H, W, C], got shape {obs_shape}")
        h, w, c = obs_shape
        layers: list[nn.Module] = []
        for out_c in channels:
            layers += [nn.Conv2d(c, out_c, kernel_size=3, stride=2, padding=1), nn.ReLU()]
            c = out_c
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, obs_shape[2], h, w)).shape[-1]
        self.proj = nn.Linear(flat, out_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.permute(0, 3, 1, 2).float() / 255.0  # [N, C, H, W]
        return self.proj(self.convs(x))


class StepEmbedder(nn.Module):
    """Sum of observation, previous-action, previous-reward, done and time embeddings."""

    def __init__(self, cfg: ModelConfig, spec: RecordSpec, num_obs_states: int | None = None):
        super().__init__()
        h = cfg.hidden_dim
        self.obs_key = spec.obs_key
        self.obs_kind = spec.obs_kind
        self.obs_shape = tuple(spec.obs_shape)
        self.max_time = cfg.max_time
        if spec.obs_kind == "continuous":
            if len(spec.obs_shape) != 1:
                raise ValueError(f"continuous observations are [C], got shape {spec.obs_shape}")
            self.obs = nn.Linear(spec.obs_shape[0], h)
        elif spec.obs_kind == "discrete":
            if num_obs_states is None or num_obs_states < 1:
                raise ValueError("discrete observations need num_obs_states >= 1 "
                                 f"(the env's observation_space.n), got {num_obs_states}")
            self.obs = nn.Embedding(num_obs_states, h)
        else:
            self.obs = ImageEncoder(self.obs_shape, cfg.conv_channels, h)
        self.action = nn.Embedding(spec.num_actions, h)
        self.reward = nn.Linear(1, h)
        self.done = nn.Embedding(3, h)  # alive, terminal, truncated
        self.time = nn.Embedding(cfg.max_time + 1, h)

    def forward(self, step_stream: TensorDict) -> torch.Tensor:
        """TensorDict[*batch] -> [*batch, hidden_dim]."""
        if self.obs_key not in step_stream.keys():
            raise KeyError(f"step_stream has no {self.obs_key!r} (the model was built for "
                           f"{self.obs_kind} observations); keys: {sorted(step_stream.keys())}")
        batch = tuple(step_stream.batch_size)
        obs = step_stream.get(self.obs_key)
        if self.obs_kind == "image":
            e_obs = self.obs(obs.reshape(-1, *self.obs_shape)).reshape(*batch, -1)
        elif self.obs_kind == "discrete":
            e_obs = self.obs(obs)
        else:
            e_obs = self.obs(obs.float())
        reward = step_stream.get("reward").float()
        time = step_stream.get("time").clamp(0, self.max_time)
        return (
            e_obs
            + self.action(step_stream.get("action"))
            + self.reward(symlog(reward).unsqueeze(-1))
            + self.done(step_stream.get("done"))
            + self.time(time)
        )
