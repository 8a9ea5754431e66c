"""The actor's work apart from its sockets: step a vector env, act, record, cut chunks.

One actor owns ``env.num_envs`` streams with run-unique ids
``actor_id * num_envs + j``. ``Stepper.step()`` makes one vector step; once
``chunk_steps`` steps are pending, ``take()`` hands over the chunk (stream-major:
each stream's records are consecutive) and the episodes finished meanwhile.
The transport around it is ``actors.actor.Actor``.
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict

from mouse.acting import ActingPolicy, ape_x_epsilons
from mouse.config import RunConfig
from mouse.envs import REWARD_TRANSFORMS, EnvInfo, make_vector_env
from mouse.records import StreamRecorder


def actor_epsilons(cfg: RunConfig, actor_id: int) -> torch.Tensor:
    """Ape-X epsilons [num_envs] of this actor's streams.

    The ``num_actors * num_envs`` streams of a run share one spread
    ``epsilon ** (1 + alpha * i / (N - 1))``; actors beyond ``num_actors`` (added
    later) take the slot ``actor_id % num_actors``, so the spread stays the same.
    """
    n, slots = cfg.env.num_envs, max(cfg.num_actors, 1)
    a = cfg.actor
    return ape_x_epsilons(a.epsilon, a.epsilon_alpha, (actor_id % slots) * n, n, slots * n)


class Stepper:
    """Vector env + acting policy + recorder of one actor; ``version`` tags the records."""

    def __init__(self, cfg: RunConfig, actor_id: int, info: EnvInfo, model):
        n = cfg.env.num_envs
        self.cfg, self.num_envs = cfg, n
        self.stream_ids = torch.arange(n) + actor_id * n
        self.seed = cfg.actor.seed + 1000 * actor_id
        self.env = make_vector_env(cfg.env)
        self.policy = ActingPolicy(model, cfg.actor.policy, cfg.acting_context,
                                   actor_epsilons(cfg, actor_id), self.seed)
        self.recorder = StreamRecorder(info.spec, self.stream_ids, info.num_env_actions,
                                       REWARD_TRANSFORMS[cfg.env.reward_transform], info.q_star_table)
        self.version = -1  # weights version that acts (set by the actor as weights arrive)
        self.env_steps = 0
        # episode bookkeeping in numpy: per-step torch ops on [N] tensors cost more than the step
        self.ep_return, self.ep_len = np.zeros(n), np.zeros(n, dtype=np.int64)
        self.rec: TensorDict | None = None
        self.pending: list[TensorDict] = []
        self.episodes: list[dict] = []

    def reset(self) -> None:
        obs, _ = self.env.reset(seed=self.seed)
        self.rec = self.recorder.reset(obs, self.version)
        self.pending = [self.rec]

    def step(self) -> None:
        """One vector step: act on the newest records, step the envs, record the result."""
        if self.rec is None:
            self.reset()
        action = self.policy.act(self.rec)
        obs, reward, term, trunc, _ = self.env.step(action.numpy())
        rec = self.rec = self.recorder.step(action, obs, reward, term, trunc, self.version)
        self.env_steps += self.num_envs
        self.pending.append(rec)
        self.ep_return += rec["reward"].numpy()
        self.ep_len += rec["time"].numpy() > 0
        for j in np.flatnonzero(rec["done"].numpy()).tolist():
            self.episodes.append({"stream_id": int(self.stream_ids[j]), "return": float(self.ep_return[j]),
                                  "length": int(self.ep_len[j]), "policy_version": self.version})
            self.ep_return[j], self.ep_len[j] = 0.0, 0

    def ready(self) -> bool:
        return len(self.pending) >= self.cfg.actor.chunk_steps

    def take(self) -> tuple[TensorDict | None, list[dict]]:
        """The pending records as one chunk [N*K] (None when empty) and the finished episodes."""
        chunk = None
        if self.pending:
            chunk = torch.stack(self.pending, dim=1).reshape(-1)  # [N, K] -> [N*K], stream-major
        episodes, self.pending, self.episodes = self.episodes, [], []
        return chunk, episodes

    def close(self) -> None:
        self.env.close()
