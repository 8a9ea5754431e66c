"""Acting from the model: a rolling context per sub-env, then select_action.

Shared by the actor processes and the learner's evaluator, so both act the
same way from the same weights.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from mouse.models import select_action

# the fields the model reads; the rest of a record (q_star, ids) is not needed to act
_MODEL_INPUTS = ("action", "reward", "done", "time")


def ape_x_epsilons(base: float, alpha: float, first: int, count: int, total: int) -> torch.Tensor:
    """Ape-X exploration: stream i of ``total`` gets base ** (1 + alpha * i / (total - 1))."""
    i = torch.arange(first, first + count, dtype=torch.float64)
    power = 1 + alpha * i / max(total - 1, 1)
    return (base ** power).to(torch.float32)


class ActingPolicy:
    """Chooses actions for N sub-envs from their recent records."""

    def __init__(self, model, policy: str, context_len: int, epsilon: torch.Tensor | float = 0.0,
                 seed: int = 0):
        self.model = model
        self.policy = policy
        # an mlp backbone sees one step at a time: no need to carry context
        self.context_len = 1 if model.cfg.backbone == "mlp" else max(1, context_len)
        self.epsilon = epsilon
        self.generator = torch.Generator().manual_seed(seed)
        self.context: TensorDict | None = None

    def reset(self) -> None:
        self.context = None

    @torch.inference_mode()
    def act(self, records: TensorDict) -> torch.Tensor:
        """records: the newest record of each sub-env, [N]; returns actions [N]."""
        keys = [k for k in records.keys() if k.startswith("obs_") or k in _MODEL_INPUTS]
        step = records.select(*keys).unsqueeze(1)  # [N, 1]
        if self.context is None or self.context_len == 1:
            self.context = step
        else:
            self.context = torch.cat([self.context, step], dim=1)[:, -self.context_len:]  # [N, <=K]
        out = self.model(self.context, last_only=True)  # [N], online heads only
        mask = records.get("action_mask", None)
        return select_action(out, self.policy, self.epsilon, mask, self.generator)
