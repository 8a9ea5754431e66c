"""EnvPool as the vector env (``--env.vector envpool``): C++ sub-envs stepped in its own threads.

An option for users whose envs EnvPool has (classic control, Atari, MuJoCo ...) and
where gymnasium's Python stepping is the actor's bottleneck; gymnasium stays the
default. EnvPool already autoresets NEXT_STEP-style (the step after an episode ends
returns the reset observation with reward 0 and ignores the action), which the
records rely on. It takes its seed when built, so ``reset(seed=...)`` builds the
pool again with that seed, as a gymnasium vector env would reseed its sub-envs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings

import numpy as np

MISSING = ("env.vector: envpool is not installed (pip install envpool, Linux x86-64 and "
           "Python <= 3.11 wheels), or leave env.vector at gymnasium")


def available() -> bool:
    return importlib.util.find_spec("envpool") is not None


@contextlib.contextmanager
def _quiet():
    """Without gymnasium's warnings about EnvPool's float64 Box bounds (harmless)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*Box (low|high)'s precision lowered")
        yield


class EnvPoolVector:
    """The part of gymnasium's ``VectorEnv`` the actors use: reset, step, close, spaces."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0):
        if not available():
            raise ValueError(MISSING)
        import envpool

        if env_id not in envpool.list_all_envs():
            raise ValueError(f"env.vector: envpool has no env {env_id!r} (envpool.list_all_envs() "
                             "names those it has); use env.vector=gymnasium for it")
        self.env_id, self.num_envs = env_id, num_envs
        self._pool = self._make(seed)
        self.single_observation_space = self._pool.single_observation_space
        self.single_action_space = self._pool.single_action_space

    def _make(self, seed: int):
        import envpool

        # num_threads: EnvPool's default is one per sub-env; an actor process is one of many
        with _quiet():
            pool = envpool.make(self.env_id, env_type="gymnasium", num_envs=self.num_envs, seed=seed,
                                num_threads=1)
            pool.observation_space, pool.action_space  # noqa: B018  (made and kept on first access)
        return pool

    def reset(self, seed: int | None = None, options=None):
        if seed is not None:
            self._pool.close()
            self._pool = self._make(seed)
        return self._pool.reset()

    def step(self, action):
        return self._pool.step(np.asarray(action))

    def close(self) -> None:
        self._pool.close()
