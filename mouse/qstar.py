"""Exact Q* for environments whose model is known: gymnasium's toy-text transition tables.

FrozenLake, CliffWalking and Taxi expose ``env.unwrapped.P`` with
``P[s][a] = [(prob, next_state, reward, terminated), ...]``. Value iteration on
that table gives the optimal action values of the discounted problem:

    Q*(s, a) = sum_k p_k * (r_k + gamma * (1 - terminated_k) * max_a' Q*(s'_k, a'))

A terminal transition does not bootstrap, so states that end the episode when
entered (FrozenLake's holes and goal) are worth only the reward of entering
them; their own rows are 0. Truncation (time limits) is not part of the table:
Q* is the value of the untruncated problem.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

_CACHE: dict[tuple, torch.Tensor] = {}


def has_transition_table(env) -> bool:
    """Whether ``env`` (or what it wraps) exposes a complete discrete transition table P."""
    from gymnasium import spaces

    inner = getattr(env, "unwrapped", env)
    table = getattr(inner, "P", None)
    obs_space, action_space = getattr(inner, "observation_space", None), getattr(inner, "action_space", None)
    return (isinstance(table, (dict, list)) and isinstance(obs_space, spaces.Discrete)
            and isinstance(action_space, spaces.Discrete) and len(table) == int(obs_space.n))


def _flatten(table, num_states: int, n: int):
    """P as flat arrays over all transitions: (s * n + a, prob, next_state, reward, terminated)."""
    sa, prob, nxt, rew, term = [], [], [], [], []
    for s in range(num_states):
        for a in range(n):
            try:
                transitions = table[s][a]
            except (KeyError, IndexError, TypeError):
                raise ValueError(f"transition table has no entry P[{s}][{a}]") from None
            if not transitions:
                raise ValueError(f"P[{s}][{a}] lists no transitions")
            for t in transitions:
                p, s2, r, done = t
                sa.append(s * n + a)
                prob.append(p), nxt.append(s2), rew.append(r), term.append(done)
    sa, prob = np.asarray(sa, np.int64), np.asarray(prob, np.float64)
    nxt, rew, term = np.asarray(nxt, np.int64), np.asarray(rew, np.float64), np.asarray(term, np.float64)
    total = np.bincount(sa, weights=prob, minlength=num_states * n)
    if (prob < 0).any() or not np.allclose(total, 1.0, atol=1e-6):
        raise ValueError("transition probabilities must be >= 0 and sum to 1 for every (s, a)")
    if ((nxt < 0) | (nxt >= num_states)).any() or not np.isfinite(rew).all():
        raise ValueError("transition table has next states out of range or non-finite rewards")
    return sa, prob, nxt, rew, term


def _value_iteration(sa, prob, nxt, rew, term, num_states: int, n: int, gamma: float,
                     tol: float, max_iters: int) -> np.ndarray:
    """Q* [num_states, n] in float64, within ``tol`` (sup norm) of the fixed point."""
    reward = np.bincount(sa, weights=prob * rew, minlength=num_states * n)  # E[r | s, a], [S*n]
    keep = prob * (1.0 - term)  # probability mass that bootstraps

    def backup(v):  # [S] -> [S, n]
        return (reward + gamma * np.bincount(sa, weights=keep * v[nxt], minlength=num_states * n)
                ).reshape(num_states, n)

    v = np.zeros(num_states)
    for _ in range(max_iters):
        v_new = backup(v).max(axis=1)
        delta = float(np.abs(v_new - v).max())
        v = v_new
        # ||v - v*|| <= gamma * delta / (1 - gamma); float64 cannot resolve below ~eps * |v|
        if delta <= max(tol * (1 - gamma), 16 * np.finfo(np.float64).eps * max(1.0, np.abs(v).max())):
            return backup(v)
    raise RuntimeError(f"value iteration did not converge in {max_iters} iterations "
                       f"(gamma={gamma}, last change {delta:.3g})")


def q_star_table(env, gamma: float, num_actions: int | None = None, tol: float = 1e-10,
                 max_iters: int = 1_000_000) -> torch.Tensor:
    """Q* as float32 [num_states, A]; A = ``num_actions`` or the env's; extra columns -inf.

    Cached by the table's contents and gamma, so every actor of a run pays once.
    """
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.floating)) \
            or not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1) for value iteration to converge, got {gamma!r}")
    if not has_transition_table(env):
        name = env.spec.id if getattr(env, "spec", None) is not None else type(env).__name__
        raise ValueError(f"{name} exposes no transition table env.unwrapped.P with Discrete spaces "
                         "(supported: FrozenLake, CliffWalking, Taxi)")
    inner = env.unwrapped
    num_states, n = int(inner.observation_space.n), int(inner.action_space.n)
    A = n if num_actions is None else int(num_actions)
    if A < n:
        raise ValueError(f"num_actions={A} is less than the env's {n} actions")
    arrays = _flatten(inner.P, num_states, n)
    digest = hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()
    key = (digest, num_states, n, A, float(gamma), tol)
    if key not in _CACHE:
        q = _value_iteration(*arrays, num_states, n, float(gamma), tol, max_iters)
        out = torch.full((num_states, A), -math.inf, dtype=torch.float32)
        out[:, :n] = torch.from_numpy(q).to(torch.float32)
        _CACHE[key] = out
    return _CACHE[key].clone()
