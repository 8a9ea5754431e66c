"""mouse/CueRecall-v0: spaces, episode layout, determinism, and that only memory solves it."""

from __future__ import annotations

import itertools
import subprocess
import sys

import gymnasium as gym
import pytest

from mouse.config import EnvConfig
from mouse.envs import describe_env, make_vector_env
from mouse.tasks import CUE_RECALL_ID, CueRecall
from tests.run_helpers import REPO


def play(env: CueRecall, actions) -> tuple[list, list, bool]:
    """Observations and rewards of the episode just reset, with actions ``actions(obs, t)``."""
    obs = env.cue
    observations, rewards = [obs], []
    for t in itertools.count():
        obs, r, term, trunc, _ = env.step(actions(obs, t))
        rewards.append(r)
        if term or trunc:
            return observations, rewards, term
        observations.append(obs)


def test_spaces_and_episode_layout():
    env = CueRecall(num_cues=4, delay=3)
    assert env.observation_space == gym.spaces.Discrete(6)  # blank, 4 cues, go
    assert env.action_space == gym.spaces.Discrete(5)  # wait, 4 answers
    env.reset(seed=1)
    cue = env.cue
    # the remembered answer: wait through the delay, then name the cue
    obs, rewards, term = play(env, lambda o, t: 0 if t < 3 else cue)
    assert term and obs == [cue, 0, 0, 5] and rewards == [0, 0, 0, 1.0]


def test_wrong_answers_and_moving_during_the_delay_cost():
    env = CueRecall(num_cues=4, delay=3, wait_penalty=1.5)
    env.reset(seed=2)
    wrong = env.cue % 4 + 1
    _, rewards, _ = play(env, lambda o, t: 1 if t == 1 else (0 if t < 3 else wrong))
    assert rewards == [0, -1.5, 0, 0.0]


def test_a_seed_fixes_the_cues():
    def cues(seed, n=20):
        env = gym.make(CUE_RECALL_ID)
        env.reset(seed=seed)
        out = []
        for _ in range(n):
            obs, _ = env.reset()
            out.append(obs)
        return out

    assert cues(7) == cues(7)
    assert cues(7) != cues(8)
    assert set(cues(7, 200)) == {1, 2, 3, 4}  # every cue comes up


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="wait_penalty >= 1"):
        CueRecall(wait_penalty=0.5)
    with pytest.raises(ValueError, match="num_cues >= 2"):
        CueRecall(num_cues=1)


def best_memoryless_return(env: CueRecall) -> float:
    """Best expected return over every deterministic policy of what the mlp sees in one record:
    observation, previous action (the previous reward and done follow from it), time."""
    K, D = env.num_cues, env.delay
    actions = range(K + 1)
    # t = 0 sees the cue; t = 1..D see blank/go, so their policy is a table prev action -> action
    first_tables = list(itertools.product(actions, repeat=K))
    later_tables = list(itertools.product(actions, repeat=K + 1))
    best = -float("inf")
    for first in first_tables:
        for later in itertools.product(later_tables, repeat=D):
            total = 0.0
            for cue in range(1, K + 1):
                env.reset()
                env.cue = cue
                a, ret = first[cue - 1], 0.0
                for t in range(D + 1):
                    _, r, term, _, _ = env.step(a)
                    ret += r
                    if not term:
                        a = later[t][a]
                total += ret / K
            best = max(best, total)
    return best


def test_only_memory_solves_it():
    env = CueRecall(num_cues=2, delay=2)
    # all 3^2 * (3^3)^2 deterministic one-record policies: none beats guessing (1/K)
    assert best_memoryless_return(env) == pytest.approx(0.5)
    # while remembering the cue gets 1 (test_spaces_and_episode_layout); with a cheap wait the
    # search does find policies that carry the cue in their actions: it is not blind to them
    env.wait_penalty = 0.25
    assert best_memoryless_return(env) == pytest.approx(0.75)


def test_registered_for_mouse_envs():
    info = describe_env(EnvConfig(env_id=CUE_RECALL_ID, env_kwargs='{"num_cues": 3}'))
    assert (info.spec.obs_kind, info.spec.num_obs_states, info.num_env_actions) == ("discrete", 5, 4)
    assert info.q_star_table is None
    env = make_vector_env(EnvConfig(env_id=CUE_RECALL_ID, num_envs=2))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2,) and all(1 <= o <= 4 for o in obs)
    env.close()


def test_registered_in_a_fresh_process():
    """An actor process imports nothing but mouse's own modules before making its envs."""
    code = (f"from mouse.envs import make_vector_env; from mouse.config import EnvConfig; "
            f"print(make_vector_env(EnvConfig(env_id={CUE_RECALL_ID!r}, num_envs=1)).reset(seed=0)[0])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
