"""MouseModel: step embedder -> backbone -> heads (one model, several heads trained together)."""

from __future__ import annotations

import copy

import torch
from tensordict import TensorDict
from torch import nn

from mouse import heads as registry
from mouse.records import RecordSpec

from .backbone import make_backbone
from .config import ModelConfig
from .embed import StepEmbedder
from .heads import Head, polyak_


class MouseModel(nn.Module):
    """``model(step_stream[B, S]) -> TensorDict[B, S]`` with one entry per configured head.

    ``heads`` are names from the registry (mouse.heads), which gives each its shape
    and whether it keeps a target. Built-in outputs: ``dqn`` [B,S,A], ``dqn_target``
    [B,S,A], ``vec_dqn`` [B,S,A,D], ``vec_dqn_target`` [B,S,A,D], ``sp`` [B,S,A]
    (logits), ``sv`` [B,S,A]. Target heads are deep copies of the online heads at
    init, read the backbone features detached and have ``requires_grad=False``: they
    change only in ``polyak_update`` and no gradient flows through them into the
    backbone.

    ``num_obs_states`` is required for discrete observations (the env's
    ``observation_space.n``, i.e. ``RecordSpec.num_obs_states``) and ignored otherwise.
    """

    def __init__(self, cfg: ModelConfig, spec: RecordSpec, heads: tuple[str, ...],
                 num_obs_states: int | None = None):
        super().__init__()
        heads = tuple(heads)
        known = registry.head_names()
        unknown = [h for h in heads if h not in known]
        if unknown:
            raise ValueError(f"unknown heads {unknown}; choose from {known}")
        if not heads:
            raise ValueError(f"the model needs at least one head from {known}")
        if len(set(heads)) != len(heads):
            raise ValueError(f"duplicate heads in {heads}")
        self.cfg = cfg
        self.spec = spec
        self.heads = tuple(h for h in known if h in heads)  # canonical order
        self.num_obs_states = num_obs_states if spec.obs_kind == "discrete" else None
        self.embed = StepEmbedder(cfg, spec, self.num_obs_states)
        self.backbone = make_backbone(cfg)
        self.online_heads = nn.ModuleDict(
            {h: Head(cfg, registry.get(h).out_shape(spec.num_actions, cfg)) for h in self.heads})
        self.target_heads = nn.ModuleDict({h: copy.deepcopy(self.online_heads[h])
                                           for h in self.heads if registry.get(h).has_target})
        self.target_heads.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def features(self, step_stream: TensorDict) -> torch.Tensor:
        """TensorDict[B, S] -> backbone features [B, S, H]."""
        if step_stream.batch_dims != 2:
            raise ValueError("step_stream must have batch dims [B, S], got batch_size "
                             f"{tuple(step_stream.batch_size)}")
        x = self.embed(step_stream)  # [B, S, H]
        valid = step_stream.get("valid", None)
        return self.backbone(x, valid)

    def forward(self, step_stream: TensorDict, last_only: bool = False) -> TensorDict:
        """Heads for every step of ``step_stream[B, S]``.

        ``last_only=True`` (acting) returns TensorDict[B] with the online heads at
        the last step only; target heads are skipped there since acting never reads them.
        """
        feats = self.features(step_stream)  # [B, S, H]
        if last_only:
            return self._online(feats[:, -1])
        out = {h: head(feats) for h, head in self.online_heads.items()}
        detached = feats.detach()
        for h, head in self.target_heads.items():
            out[f"{h}_target"] = head(detached)
        return TensorDict(out, batch_size=feats.shape[:-1], device=feats.device)

    def heads_at_last(self, embedded: torch.Tensor) -> TensorDict:
        """The online heads at the last step of ``embedded`` [B, S, H] (``self.embed``'s step
        embeddings of a window with no padding): ``forward(window, last_only=True)`` for a caller
        that keeps the embeddings of the window's earlier steps (acting)."""
        return self._online(self.backbone(embedded)[:, -1])

    def _online(self, feats: torch.Tensor) -> TensorDict:  # feats [B, H] -> TensorDict[B]
        out = {h: head(feats) for h, head in self.online_heads.items()}
        return TensorDict(out, batch_size=feats.shape[:-1], device=feats.device)

    def polyak_update(self, **taus: float | torch.Tensor) -> None:
        """θ_target ← τ·θ_online + (1−τ)·θ_target, ``<head>_tau=τ`` per target head.

        Takes ``dqn_tau``, ``vec_dqn_tau``, ... (one per registered head with a
        target); a head left out, or not in this model, is left. A float τ ≤ 0
        leaves the head and τ = 1 copies it. A 0-dim tensor τ stays on the device
        unchecked (checking it would be a host sync): it must lie in [0, 1].
        """
        for key, tau in taus.items():
            name = key.removesuffix("_tau")
            if not key.endswith("_tau") or name not in registry.target_head_names():
                raise TypeError(f"polyak_update() got an unexpected keyword argument {key!r}; "
                                f"it takes <head>_tau for {registry.target_head_names()}")
            if name not in self.target_heads:
                continue
            if not isinstance(tau, torch.Tensor):
                tau = float(tau)
                if tau > 1.0:
                    raise ValueError(f"{key} must be <= 1, got {tau}")
                if tau <= 0.0:
                    continue
            polyak_(self.target_heads[name], self.online_heads[name], tau)
