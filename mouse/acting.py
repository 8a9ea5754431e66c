"""Acting from the model: a rolling context per sub-env, then select_action and explore.

Shared by the actor processes and the learner's evaluator, so both act the
same way from the same weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from tensordict import TensorDict
from torch import nn

from mouse.models import explore, select_action
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


class _PolicyOutput(nn.Module):
    """The model as tracing needs it: the newest record's model inputs [N, ...] as positional
    tensors in, the policy head's output [N, ...] out (the other heads are never computed)."""

    def __init__(self, model: nn.Module, keys: tuple[str, ...], policy: str):
        super().__init__()
        self.model, self.keys, self.policy = model, keys, policy

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        step = {k: x.unsqueeze(1) for k, x in zip(self.keys, inputs)}  # [N, 1, ...]
        feats = self.model.features(unchecked_tensordict(step, (inputs[0].shape[0], 1)))[:, -1]  # [N, H]
        return self.model.online_heads[self.policy](feats)


def trace_policy(model: nn.Module, policy: str, inputs: Mapping[str, torch.Tensor]):
    """``model``'s policy head on one step of records as a TorchScript trace for inputs shaped
    like ``inputs`` ([N, ...] each, as ``ActingPolicy.act_step`` takes them), or None where it
    cannot be traced.

    Why: at an actor's batch sizes (64 sub-envs, a 128-wide mlp) the Python of the modules
    costs as much as their arithmetic; the trace runs the same aten ops from C++ (about 40%
    less time per act). It shares the model's parameters, so weights loaded in place
    (``load_acting_state``) act at once. TorchScript is deprecated in favour of
    torch.compile, which needs a C++ toolchain and seconds of compiling in every actor.
    """
    wrapper = _PolicyOutput(model, tuple(inputs), policy)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # its deprecation, and TracerWarnings on shape checks
            return torch.jit.trace(wrapper, tuple(inputs.values()), check_trace=False)
    except Exception:  # noqa: BLE001 - a model tracing cannot follow acts eagerly instead
        return None


class ActingPolicy:
    """Chooses actions for N sub-envs from their recent records.

    With a context (the transformer) it keeps the step embeddings of each sub-env's recent
    records and embeds only the newest record at each step: the image encoder, the costly
    part for pixels, runs once per frame instead of once per frame and context step. When
    the embedder's weights change (new weights loaded, or trained in place), the whole
    context is embedded again, so actions are always what the model computes on the window.

    ``traced=True`` (actors) runs an mlp model's forward as a TorchScript trace
    (``trace_policy``): the same ops and parameters, less Python per step. A model with
    context (transformer) or one that cannot be traced acts eagerly, as by default.
    """

    def __init__(self, model, policy: str, context_len: int, epsilon: torch.Tensor | float = 0.0,
                 seed: int = 0, traced: bool = False):
        self.model = model
        self.policy = policy
        # an mlp backbone sees one step at a time: no need to carry context
        self.context_len = 1 if model.cfg.backbone == "mlp" else max(1, context_len)
        self.epsilon = epsilon
        self.generator = torch.Generator().manual_seed(seed)  # the policy's own draws (sp samples)
        self.rng = np.random.default_rng(seed)  # ε-exploration
        self.context: dict[str, torch.Tensor] | None = None  # [N, <=context_len] per model input
        self.embedded: torch.Tensor | None = None  # the context's step embeddings [N, <=K, H]
        self._embedder_versions: tuple = ()  # its weights (ids, version counters) then
        # the heads the last actions were chosen from, [N] (traced: the policy head only)
        self.out: TensorDict | None = None
        self.traced = traced and self.context_len == 1
        self._traces: dict[tuple, object] = {}  # (keys, shapes, dtypes) -> trace (or None: eager)

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
        trace = self._trace(newest) if self.traced else None
        n = next(iter(newest.values())).shape[0]
        if trace is not None:
            self.out = unchecked_tensordict({self.policy: trace(*newest.values())}, (n,))  # [N]
            return self._select(self.out, action_mask)
        step = {k: v.unsqueeze(1) for k, v in newest.items()}  # [N, 1]
        if self.context_len > 1:
            self.out = self.model.heads_at_last(self._embed(step))  # [N]
        else:
            self.out = self.model(unchecked_tensordict(step, (n, 1)), last_only=True)  # [N]
        return self._select(self.out, action_mask)

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

    def _trace(self, newest: Mapping[str, torch.Tensor]):
        """The trace for inputs like ``newest`` (one per layout: shapes may be baked in)."""
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in newest.items())
        if key not in self._traces:
            self._traces[key] = trace_policy(self.model, self.policy, newest)
        return self._traces[key]

    def _select(self, out, action_mask: torch.Tensor | None) -> torch.Tensor:
        """The policy's action [N], then ε-exploration on the whole vector."""
        action = select_action(out, self.policy, action_mask, self.generator)  # [N]
        return explore(action, self.epsilon, self.rng, self.model.spec.num_actions, action_mask)
