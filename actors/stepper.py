"""The actor's work apart from its sockets: step a vector env, act, record, cut chunks.

One actor owns ``env.num_envs`` streams with run-unique ids
``actor_id * num_envs + j``. ``Stepper.step()`` makes one vector step; once
``chunk_steps`` steps are pending, ``take()`` hands over the chunk (stream-major:
each stream's records are consecutive) and the episodes finished meanwhile.
The transport around it is ``actors.actor.Actor``.

The hot loop stays in numpy and whole-vector torch calls: the recorder writes
each step into the chunk's preallocated arrays, the policy reads the newest
records as views of them, and episode returns and lengths come from the arrays
the env and the recorder already hold; no per-step TensorDict is built but the
model's input.
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict

from mouse.acting import ActingPolicy, ape_x_epsilons
from mouse.config import RunConfig
from mouse.envs import REWARD_TRANSFORMS, EnvInfo, make_vector_env
from mouse.records import ChunkRecorder


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
                                   actor_epsilons(cfg, actor_id), self.seed, traced=True)
        self.recorder = ChunkRecorder(info.spec, self.stream_ids, cfg.actor.chunk_steps,
                                      info.num_env_actions, REWARD_TRANSFORMS[cfg.env.reward_transform],
                                      info.q_star_table)
        self.version = -1  # weights version that acts (set by the actor as weights arrive)
        self.env_steps = 0
        self.started = False
        self.ep_return = np.zeros(n)  # of the running episodes (an episode's length is its time)
        # finished episodes as arrays per step: (sub-env indices, returns, lengths, version);
        # turned into the wire's dicts once per chunk, in take()
        self.finished: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []

    def reset(self) -> None:
        obs, _ = self.env.reset(seed=self.seed)
        self.recorder.reset(obs, self.version)
        self.policy.reset()
        self.ep_return[:] = 0.0
        self.started = True

    def step(self) -> None:
        """One vector step: act on the newest records, step the envs, record the result."""
        if not self.started:
            self.reset()
        rec = self.recorder
        action = self.policy.act_step(rec.newest, rec.action_mask).numpy()  # [N]
        obs, reward, term, trunc, _ = self.env.step(action)
        rec.step(action, obs, reward, term, trunc, self.version)
        self.env_steps += self.num_envs
        self.ep_return += reward  # NEXT_STEP autoreset: 0 at the reset steps
        if rec.done.any():
            j = np.flatnonzero(rec.done)
            self.finished.append((j, self.ep_return[j], rec.time[j], self.version))  # fancy indexing copies
            self.ep_return[j] = 0.0

    @property
    def pending(self) -> list[TensorDict]:
        """The records not yet taken, one ``TensorDict[N]`` per step (for inspection)."""
        records = self.recorder.pending()
        return [] if records is None else list(records.unbind(1))

    def ready(self) -> bool:
        return self.recorder.steps >= self.cfg.actor.chunk_steps

    def take(self) -> tuple[TensorDict | None, list[dict]]:
        """The pending records as one chunk [N*K] (None when empty) and the finished episodes."""
        chunk = self.recorder.take()  # [N*K], stream-major
        ids = self.stream_ids.numpy()
        episodes = [{"stream_id": s, "return": r, "length": t, "policy_version": v}
                    for j, ret, time, v in self.finished
                    for s, r, t in zip(ids[j].tolist(), ret.tolist(), time.tolist())]
        self.finished = []
        return chunk, episodes

    def close(self) -> None:
        self.env.close()
