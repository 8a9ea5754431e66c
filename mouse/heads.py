"""The head registry: one ``HeadSpec`` per output head; every head table derives from it.

Adding a head is one ``register(HeadSpec(...))`` entry plus its loss (a function
returning ``(loss, dict[str, Tensor])``, and a loss config with ``weight`` --
and ``tau`` if the head keeps a target -- held by a ``TrainConfig`` field):

- the model builds its output layer, and a target copy when ``has_target``;
- the train step adds ``weight · loss`` when ``weight > 0``, checks the batch
  carries ``q_star`` when ``needs_q_star``, and Polyak-averages the target at
  the config's ``tau``;
- the actors can act with it when ``act`` is set.

Order of registration is the canonical head order (output keys, model modules,
metrics). The built-in heads are registered at the bottom of this module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:  # the registry imports without torch: the run config (mouse --help) reads it
    from tensordict import TensorDict
    from torch import Tensor

LossFn = Callable[["TensorDict", "TensorDict", Any], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass(frozen=True)
class HeadSpec:
    name: str
    """Output key in the model's TensorDict; the target copy's key is ``<name>_target``."""
    out_shape: Callable[[int, Any], tuple[int, ...]]
    """(num_actions, ModelConfig) -> the head's output shape per step, e.g. (A,) or (A, D)."""
    config: str
    """Name of the TrainConfig field holding the loss config (``weight``; ``tau`` with a target)."""
    loss: LossFn
    """(batch [B, S], model output [B, S], loss config) -> (loss, detached 0-dim metrics)."""
    has_target: bool = False
    """Keeps a Polyak-averaged copy (no gradient), moved at the loss config's ``tau``."""
    needs_q_star: bool = False
    """The loss learns from the actors' ``q_star`` annotation, so the batch must carry it."""
    act: Literal["greedy", "sample"] | None = None
    """How actors act on it: argmax of the scores, or a sample of softmax(scores); None: never."""
    scores: Callable[[Tensor, Tensor | None], Tensor] | None = None
    """(output [N, *out_shape], action_mask [N, A] or None) -> scores [N, A]; None: the output."""

    @property
    def outputs(self) -> tuple[str, ...]:
        """Keys this head adds to the model output during training."""
        return (self.name, f"{self.name}_target") if self.has_target else (self.name,)


_REGISTRY: dict[str, HeadSpec] = {}


def register(spec: HeadSpec) -> HeadSpec:
    """Add a head (after every head registered so far)."""
    taken = {k for h in _REGISTRY.values() for k in h.outputs}
    if spec.name in _REGISTRY or taken & set(spec.outputs):
        raise ValueError(f"head {spec.name!r}: its outputs {spec.outputs} clash with the "
                         f"registered heads' {sorted(taken)}")
    if spec.scores is not None and spec.act is None:
        raise ValueError(f"head {spec.name!r} has scores but act=None: say how it acts")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> HeadSpec:
    """Remove a head registered earlier (tests register heads for a while)."""
    return _REGISTRY.pop(name)


def get(name: str) -> HeadSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown head {name!r}; registered: {head_names()}")
    return _REGISTRY[name]


def all_heads() -> tuple[HeadSpec, ...]:
    return tuple(_REGISTRY.values())


def head_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def target_head_names() -> tuple[str, ...]:
    return tuple(h.name for h in _REGISTRY.values() if h.has_target)


def policy_names() -> tuple[str, ...]:
    return tuple(h.name for h in _REGISTRY.values() if h.act is not None)


def loss_config(train_cfg, spec: HeadSpec):
    """The head's loss config on ``train_cfg``; None when that config has no such field."""
    return getattr(train_cfg, spec.config, None)


def active_heads(train_cfg) -> tuple[str, ...]:
    """Heads whose loss has weight > 0 on ``train_cfg``, in canonical order."""
    return tuple(h.name for h in _REGISTRY.values()
                 if (c := loss_config(train_cfg, h)) is not None and c.weight > 0)


# ------------------------------------------------------------------ built-in heads


def _on_first_call(module: str, name: str) -> Callable:
    """``module.name``, imported when first called: the built-in losses and scores need torch,
    the table of heads does not."""
    fn = None

    def call(*args, **kwargs):
        nonlocal fn
        if fn is None:
            fn = getattr(importlib.import_module(module), name)
        return fn(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


dqn_loss_tensors = _on_first_call("mouse.losses.dqn", "dqn_loss_tensors")
vec_dqn_loss_tensors = _on_first_call("mouse.losses.vec_dqn", "vec_dqn_loss_tensors")
sp_loss_tensors = _on_first_call("mouse.losses.sp", "sp_loss_tensors")
sv_loss_tensors = _on_first_call("mouse.losses.sv", "sv_loss_tensors")
vec_dqn_scores = _on_first_call("mouse.geometry", "vec_dqn_scores")


def _per_action(num_actions: int, model_cfg) -> tuple[int, ...]:
    return (num_actions,)  # one number per action: a Q-value, a logit or a value


def _vector_per_action(num_actions: int, model_cfg) -> tuple[int, ...]:
    return (num_actions, model_cfg.vec_dim)  # one D-dim direction per action


register(HeadSpec(
    "dqn", _per_action, config="dqn", has_target=True, act="greedy",
    loss=dqn_loss_tensors))  # reads dqn and dqn_target from the output itself
register(HeadSpec(
    "vec_dqn", _vector_per_action, config="vec_dqn", has_target=True, act="greedy",
    scores=vec_dqn_scores,  # the same greedy rule as the loss's bootstrap
    loss=lambda batch, out, cfg: vec_dqn_loss_tensors(batch, out["vec_dqn"],
                                                      out["vec_dqn_target"], cfg)))
register(HeadSpec(
    "sp", _per_action, config="sp", needs_q_star=True, act="sample",
    loss=lambda batch, out, cfg: sp_loss_tensors(batch, out["sp"], cfg)))
register(HeadSpec(
    "sv", _per_action, config="sv", needs_q_star=True,
    loss=lambda batch, out, cfg: sv_loss_tensors(batch, out["sv"], cfg)))
