"""Acting: choose actions from the heads at the last step, and which heads a run needs."""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict

from mouse import heads as registry

# the heads registered at import (the built-ins) that actors can act with
POLICIES = registry.policy_names()


def _policy_head(policy: str) -> registry.HeadSpec:
    if policy not in registry.policy_names():
        raise ValueError(f"policy must be one of {registry.policy_names()}, got {policy!r}")
    return registry.get(policy)


def heads_for(train_cfg, policy: str) -> tuple[str, ...]:
    """Heads a run needs: every loss with weight > 0, plus the head the actors act with.

    ``train_cfg`` is a ``mouse.train.TrainConfig`` (anything with a loss config,
    carrying a ``weight``, in the field each registered head names).
    """
    _policy_head(policy)
    active = registry.active_heads(train_cfg)
    return tuple(h for h in registry.head_names() if h in active or h == policy)


def select_action(out_last: TensorDict, policy: str, action_mask: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The policy's actions [N] (int64) from the heads at the acting step, ``out_last`` TensorDict[N].

    The policy head's registry entry says how (built-ins below):

    - ``dqn``: greedy on ``out_last["dqn"]`` [N, A].
    - ``sp``: a sample from softmax of ``out_last["sp"]`` logits (Gumbel-max).
    - ``vec_dqn``: greedy on ``vec_dqn_scores(out_last["vec_dqn"], action_mask)``.

    ``action_mask`` [N, A] (True = allowed) is honoured by every branch; a row with
    no allowed action is the caller's bug and yields action 0. ε-exploration on top: ``explore``.
    """
    head = _policy_head(policy)
    if policy not in out_last.keys():
        raise KeyError(f"policy {policy!r} needs the {policy!r} head output; "
                       f"got {sorted(out_last.keys())}")
    x = out_last.get(policy)
    device = x.device
    if action_mask is not None:
        action_mask = action_mask.to(device=device, dtype=torch.bool)
    if head.scores is not None:
        scores = head.scores(x.float(), action_mask)  # [N, *out_shape] -> [N, A]
    else:
        scores = x.float()  # [N, A]
    n, a = scores.shape
    if action_mask is not None:
        scores = scores.masked_fill(~action_mask, float("-inf"))
    if head.act == "sample":
        # Gumbel-max: argmax(logits + Gumbel noise) is a sample of softmax(logits)
        gen_device = generator.device if generator is not None else device  # a CPU generator may drive CUDA
        u = torch.rand((n, a), generator=generator, device=gen_device).to(device)
        scores = scores - torch.log(-torch.log(u.clamp_(min=torch.finfo(torch.float32).tiny)))
    return scores.argmax(-1)  # [N]


def explore(action: torch.Tensor, epsilon: float | torch.Tensor, rng: np.random.Generator,
            num_actions: int, action_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ε-exploration of ``action`` [N]: with probability ``epsilon`` (a float or a per-row
    Tensor[N]) a row instead takes an action uniformly among its allowed ones (``action_mask``
    [N, A], True = allowed; all ``num_actions`` without one), whatever the policy.

    Drawn in numpy on the whole vector: at N = 64 torch's draws and ``where`` cost about as
    much as the model's head. Returns ``action`` itself when no row explores.
    """
    eps = epsilon.cpu().numpy() if isinstance(epsilon, torch.Tensor) else epsilon
    if not np.any(eps):
        return action
    n = action.shape[0]
    rows = rng.random(n, dtype=np.float32) < eps  # [N]
    if not rows.any():
        return action
    if action_mask is None:
        random_action = rng.integers(0, num_actions, n)
    else:  # uniform among the allowed: argmax of noise with the disallowed at -1
        mask = np.asarray(action_mask.cpu().numpy(), dtype=bool)
        random_action = np.where(mask, rng.random(mask.shape), -1.0).argmax(1)  # [N]
    chosen = np.where(rows, random_action, action.cpu().numpy())
    return torch.from_numpy(chosen).to(action.device)
