"""Acting from the model: a rolling context per sub-env, then select_action.

Shared by the actor processes and the learner's evaluator, so both act the
same way from the same weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from tensordict import TensorDict

from mouse.models import select_action
from mouse.replay.torchrl_compat import unchecked_tensordict

# the fields the model reads; the rest of a record (q_star, ids) is not needed to act
_MODEL_INPUTS = ("action", "reward", "done", "time")


def ape_x_epsilons(base: float, alpha: float, first: int, count: int, total: int) -> torch.Tensor:
    """Ape-X exploration: stream i of ``total`` gets base ** (1 + alpha * i / (total - 1))."""
    i = torch.arange(first, first + count, dtype=torch.float64)
    power = 1 + alpha * i / max(total - 1, 1)
    return (base ** power).to(torch.float32)


# MouseModel's target heads (Polyak copies read only by the TD losses): never used to act
_TARGET_PREFIX = "target_heads."


def acting_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The part of ``model.state_dict()`` that acting reads: all but the target heads.

    What the learner publishes and actors load (the tensors alias the model's own).
    """
    return {k: v for k, v in model.state_dict().items() if not k.startswith(_TARGET_PREFIX)}


@torch.no_grad()
def load_acting_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model`` in place; it must hold exactly ``acting_state(model)``'s
    names, shapes and dtypes (checked before anything is copied: ValueError naming them).

    In place, so the model object, its modules and whoever holds them stay valid, and a
    bare copy per tensor costs a fraction of ``load_state_dict``'s module walk.
    """
    own = acting_state(model)
    if state.keys() != own.keys():
        raise ValueError(f"weights do not fit the model: missing {sorted(own.keys() - state.keys())}, "
                         f"unexpected {sorted(state.keys() - own.keys())}")
    bad = [f"{k}: {tuple(state[k].shape)} {state[k].dtype}, expected {tuple(v.shape)} {v.dtype}"
           for k, v in own.items() if state[k].shape != v.shape or state[k].dtype != v.dtype]
    if bad:
        raise ValueError("weights do not fit the model: " + "; ".join(bad))
    torch._foreach_copy_(list(own.values()), [state[k] for k in own])


class ActingPolicy:
    """Chooses actions for N sub-envs from their recent records.

    With a context (the transformer) it keeps the step embeddings of each sub-env's recent
    records and embeds only the newest record at each step: the image encoder, the costly
    part for pixels, runs once per frame instead of once per frame and context step. When
    the embedder's weights change (new weights loaded, or trained in place), the whole
    context is embedded again, so actions are always what the model computes on the window.
    """

    def __init__(self, model, policy: str, context_len: int, epsilon: torch.Tensor | float = 0.0,
                 seed: int = 0):
        self.model = model
        self.policy = policy
        # an mlp backbone sees one step at a time: no need to carry context
        self.context_len = 1 if model.cfg.backbone == "mlp" else max(1, context_len)
        self.epsilon = epsilon
        self.generator = torch.Generator().manual_seed(seed)
        self.context: dict[str, torch.Tensor] | None = None  # [N, <=context_len] per model input
        self.embedded: torch.Tensor | None = None  # the context's step embeddings [N, <=K, H]
        self._embedder_versions: tuple = ()  # its weights (ids, version counters) then
        self.out: TensorDict | None = None  # the heads the last actions were chosen from, [N]

    def reset(self) -> None:
        self.context = self.embedded = None

    def act(self, records: TensorDict) -> torch.Tensor:
        """records: the newest record of each sub-env, [N]; returns actions [N]."""
        inputs = {k: records.get(k) for k in records.keys() if k.startswith("obs_") or k in _MODEL_INPUTS}
        return self.act_step(inputs, records.get("action_mask", None))

    @torch.inference_mode()
    def act_step(self, newest: Mapping[str, torch.Tensor],
                 action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Actions [N] from the model inputs of each sub-env's newest record (``[N, ...]`` each:
        obs_*, action, reward, done, time; views are fine, they are not kept) and an optional
        ``action_mask`` [N, A]."""
        step = {k: v.unsqueeze(1) for k, v in newest.items()}  # [N, 1]
        if self.context_len > 1:
            self.out = self.model.heads_at_last(self._embed(step))  # [N]
        else:
            n = next(iter(step.values())).shape[0]
            self.out = self.model(unchecked_tensordict(step, (n, 1)), last_only=True)  # [N]
        return select_action(self.out, self.policy, self.epsilon, action_mask, self.generator)

    def _embed(self, step: dict[str, torch.Tensor]) -> torch.Tensor:
        """Step embeddings [N, <=K, H] of the newest context_len records, ``step`` [N, 1] last."""
        keep = 1 - self.context_len
        if self.context is None:
            context = {k: v.clone() for k, v in step.items()}  # kept: own the memory
        else:  # the newest context_len records: [N, <=K]
            context = {k: torch.cat([self.context[k][:, keep:], v], dim=1) for k, v in step.items()}
        # in-place weight changes (load_acting_state, optimizer steps) bump the version counters;
        # replaced parameters change the ids
        versions = tuple((id(p), p._version) for p in self.model.embed.parameters())
        if self.embedded is None or versions != self._embedder_versions:
            n, k = next(iter(context.values())).shape[:2]
            embedded = self.model.embed(unchecked_tensordict(context, (n, k)))
        else:
            n = next(iter(step.values())).shape[0]
            newest = self.model.embed(unchecked_tensordict(step, (n, 1)))  # [N, 1, H]
            embedded = torch.cat([self.embedded[:, keep:], newest], dim=1)
        self.context, self.embedded, self._embedder_versions = context, embedded, versions
        return embedded
