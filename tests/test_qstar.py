"""Exact Q* by value iteration, checked against hand-derived and independently computed values."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from mouse.qstar import has_transition_table, q_star_table

LEFT, DOWN, RIGHT, UP = range(4)

# Deterministic FrozenLake 4x4 (S start, F frozen, H hole, G goal), states row-major:
#    S  F  F  F      0  1  2  3
#    F  H  F  H      4  5  6  7
#    F  F  F  H      8  9 10 11
#    H  F  F  G     12 13 14 15
# Reward 1 only on entering G; entering H or G ends the episode. A state whose shortest
# safe path to G has k steps is worth gamma**(k-1); holes and the goal are worth 0.
STEPS_TO_GOAL = {0: 6, 1: 5, 2: 4, 3: 5, 4: 5, 6: 3, 8: 4, 9: 3, 10: 2, 13: 2, 14: 1}
HOLES, GOAL = (5, 7, 11, 12), 15


def hand_v(gamma):
    v = np.zeros(16)
    for s, k in STEPS_TO_GOAL.items():
        v[s] = gamma ** (k - 1)
    return v


def test_deterministic_frozenlake_matches_hand_values():
    gamma = 0.9
    q = q_star_table(gym.make("FrozenLake-v1", is_slippery=False), gamma)
    assert q.shape == (16, 4) and q.dtype == torch.float32
    v = hand_v(gamma)
    np.testing.assert_allclose(q.max(dim=1).values.numpy(), v, atol=1e-6)
    # Q*(s, a) = 1 if a enters the goal, 0 if it enters a hole, else gamma * V*(s')
    expected = {
        (14, RIGHT): 1.0,                    # into G
        (14, DOWN): gamma * v[14],           # bottom edge: stays on 14
        (14, LEFT): gamma * v[13],
        (14, UP): gamma * v[10],
        (10, RIGHT): 0.0,                    # into hole 11
        (10, DOWN): gamma * v[14],
        (6, LEFT): 0.0, (6, RIGHT): 0.0,     # holes 5 and 7
        (0, LEFT): gamma * v[0], (0, UP): gamma * v[0],  # walls: stays on 0
        (0, DOWN): gamma * v[4], (0, RIGHT): gamma * v[1],
        (3, RIGHT): gamma * v[3], (3, DOWN): 0.0,
    }
    for (s, a), value in expected.items():
        assert q[s, a].item() == pytest.approx(value, abs=1e-6), (s, a)
    assert q[0, DOWN].item() == pytest.approx(0.9 ** 5)  # V*(start) = gamma**5
    assert torch.all(q[list(HOLES) + [GOAL]] == 0)


def naive_q_star(P, num_states, n, gamma, iters=5000):
    """Independent reference: textbook value iteration with plain Python loops."""
    v = [0.0] * num_states
    for _ in range(iters):
        q = [[sum(p * (r + (0.0 if done else gamma * v[s2])) for p, s2, r, done in P[s][a])
              for a in range(n)] for s in range(num_states)]
        v = [max(row) for row in q]
    return np.array(q)


def test_slippery_frozenlake_matches_naive_reference():
    env = gym.make("FrozenLake-v1", is_slippery=True)
    gamma = 0.99
    q = q_star_table(env, gamma)
    ref = naive_q_star(env.unwrapped.P, 16, 4, gamma, iters=3000)
    np.testing.assert_allclose(q.numpy(), ref, atol=1e-5)
    # the well-known optimal value of the start state for gamma = 0.99
    assert q[0].max().item() == pytest.approx(0.542, abs=1e-3)


def test_greedy_policy_reaches_goal_on_8x8():
    env = gym.make("FrozenLake-v1", map_name="8x8", is_slippery=False)
    q = q_star_table(env, 0.95)
    s, _ = env.reset(seed=0)
    for _ in range(64):
        s, r, terminated, truncated, _ = env.step(int(q[s].argmax()))
        if terminated or truncated:
            break
    assert terminated and r == 1.0


def test_cliffwalking_and_taxi_tables():
    gamma = 0.9
    cliff = q_star_table(gym.make("CliffWalking-v1"), gamma)
    assert cliff.shape == (48, 4) and torch.isfinite(cliff).all()
    # from the start (36) the shortest path is 13 steps of reward -1 (up, 11 right, down)
    assert cliff[36].max().item() == pytest.approx(-(1 - gamma ** 13) / (1 - gamma), abs=1e-5)
    v_start = cliff[36].max().item()
    cliff_up, cliff_right, cliff_down = 0, 1, 2  # CliffWalking's own action order
    assert cliff[36, cliff_up].item() == pytest.approx(v_start, abs=1e-5)
    # stepping into the cliff costs -100 and puts the agent back on the start
    assert cliff[36, cliff_right].item() == pytest.approx(-100 + gamma * v_start, abs=1e-4)
    assert cliff[36, cliff_down].item() == pytest.approx(-1 + gamma * v_start, abs=1e-4)  # wall
    taxi = q_star_table(gym.make("Taxi-v4"), gamma)
    assert taxi.shape == (500, 6) and torch.isfinite(taxi).all()
    assert taxi.max().item() <= 20 and taxi.min().item() >= -10 / (1 - gamma)


def test_padding_columns_are_minus_inf_and_cache_returns_copies():
    env = gym.make("FrozenLake-v1", is_slippery=False)
    q = q_star_table(env, 0.9, num_actions=6)
    assert q.shape == (16, 6)
    assert torch.all(q[:, 4:] == -math.inf) and torch.isfinite(q[:, :4]).all()
    q[0, 0] = 123.0  # mutating a result must not poison the cache
    assert q_star_table(env, 0.9, num_actions=6)[0, 0].item() != 123.0


def test_rejects_bad_inputs():
    frozen = gym.make("FrozenLake-v1")
    assert has_transition_table(frozen) and has_transition_table(frozen.unwrapped)
    cartpole = gym.make("CartPole-v1")
    assert not has_transition_table(cartpole)
    with pytest.raises(ValueError, match="transition table"):
        q_star_table(cartpole, 0.9)
    for gamma in (1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            q_star_table(frozen, gamma)
    with pytest.raises(ValueError, match="num_actions"):
        q_star_table(frozen, 0.9, num_actions=3)


def test_gamma_zero_is_expected_immediate_reward():
    q = q_star_table(gym.make("FrozenLake-v1", is_slippery=False), 0.0)
    assert q[14, RIGHT].item() == 1.0 and q.sum().item() == 1.0
