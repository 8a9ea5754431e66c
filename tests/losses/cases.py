"""Tiny hand-written windows (B=2, S=3, A=3) shared by the loss tests.

Alignment reminder: record t holds the action/reward/done that produced obs_t,
so pair (t, t+1) uses q[:, t] with action/reward/done at t+1.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from tensordict import TensorDict

NEG_INF = float("-inf")


def stream(**fields) -> TensorDict:
    """A [B, S] step-stream TensorDict; ints -> int64, floats -> float32, bools -> bool."""
    out = {}
    for k, v in fields.items():
        t = torch.as_tensor(v)
        if t.dtype == torch.float64:
            t = t.float()
        out[k] = t
    B, S = next(iter(out.values())).shape[:2]
    return TensorDict(out, batch_size=[B, S])


# DQN base window. Hand-derived per pair (rows b, pair index t -> t+1):
#   q_sa     = q[b, t, action[b, t+1]]        = [[3, 5], [-1, 3]]
#   max_next = max_a q_target[b, t+1]         = [[10, 5], [4, -1]]
#   reward   = reward[b, t+1]                 = [[1, 2], [-1, 0.5]]
#   done     = done[b, t+1]                   = [[alive, terminal], [alive, truncated]]
DQN_Q = [
    [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.0, 0.0, 0.0]],
    [[0.0, -1.0, 2.0], [3.0, 1.0, -2.0], [0.0, 0.0, 0.0]],
]
DQN_Q_TARGET = [
    [[0.0, 0.0, 0.0], [10.0, 0.0, 1.0], [2.0, 5.0, 3.0]],
    [[0.0, 0.0, 0.0], [1.0, 1.0, 4.0], [-1.0, -3.0, -2.0]],
]
DQN_FIELDS = dict(
    action=[[0, 2, 1], [0, 1, 0]],
    reward=[[0.0, 1.0, 2.0], [0.0, -1.0, 0.5]],
    xformed_reward=[[0.0, 10.0, 20.0], [0.0, -10.0, 5.0]],
    done=[[0, 0, 1], [0, 0, 2]],
)


def dqn_inputs(requires_grad: bool = False, **extra):
    """(step_stream, out) for the DQN base window; ``extra`` adds/overrides fields."""
    td = stream(**{**DQN_FIELDS, **extra})
    q = torch.tensor(DQN_Q, requires_grad=requires_grad)
    qt = torch.tensor(DQN_Q_TARGET, requires_grad=requires_grad)
    out = TensorDict({"dqn": q, "dqn_target": qt}, batch_size=[2, 3])
    return td, out, q, qt


@contextlib.contextmanager
def nan_free_backward():
    """``detect_anomaly``: any NaN produced in backward raises (its warning silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")
        with torch.autograd.detect_anomaly():
            yield
