"""Acting: choose actions from the heads at the last step, and which heads a run needs."""

from __future__ import annotations

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


def _uniform(shape, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    # draw on the generator's device (a CPU generator may drive CUDA acting), then move
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def select_action(out_last: TensorDict, policy: str, epsilon: float | torch.Tensor = 0.0,
                  action_mask: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Actions [N] (int64) from the heads at the acting step, ``out_last`` TensorDict[N].

    The policy head's registry entry says how (built-ins below):

    - ``dqn``: greedy on ``out_last["dqn"]`` [N, A].
    - ``sp``: a sample from softmax of ``out_last["sp"]`` logits (Gumbel-max).
    - ``vec_dqn``: greedy on ``vec_dqn_scores(out_last["vec_dqn"], action_mask)``.

    With probability ``epsilon`` (a float or a per-row Tensor[N]) a row instead takes
    an action uniformly among its allowed ones, whatever the policy (ε-greedy for
    ``dqn``; the default ε = 0 leaves ``sp``/``vec_dqn`` exactly as above).
    ``action_mask`` [N, A] (True = allowed) is honoured by every branch; a row with
    no allowed action is the caller's bug and yields action 0.
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
        u = _uniform((n, a), device, generator).clamp_(min=torch.finfo(torch.float32).tiny)
        scores = scores - torch.log(-torch.log(u))
    action = scores.argmax(-1)  # [N]

    if isinstance(epsilon, torch.Tensor) or epsilon > 0:
        # random action among allowed ones: argmax of uniform noise over allowed entries
        noise = _uniform((n, a), device, generator)
        if action_mask is not None:
            noise = noise.masked_fill(~action_mask, -1.0)
        random_action = noise.argmax(-1)  # [N]
        if isinstance(epsilon, torch.Tensor):
            epsilon = epsilon.to(device=device, dtype=torch.float32)  # [N] or []
        explore = _uniform((n,), device, generator) < epsilon  # [N]
        action = torch.where(explore, random_action, action)
    return action
