"""MouseModel: step embedder -> backbone -> heads (one model, several heads trained together)."""

from __future__ import annotations

import copy

import torch
from tensordict import TensorDict
from torch import nn

from mouse.records import RecordSpec

from .backbone import make_backbone
from .config import HEADS, TARGET_HEADS, ModelConfig
from .embed import StepEmbedder
from .heads import Head, head_out_shape, polyak_


class MouseModel(nn.Module):
    """``model(step_stream[B, S]) -> TensorDict[B, S]`` with one entry per configured head.

    Outputs: ``dqn`` [B,S,A], ``dqn_target`` [B,S,A], ``vec_dqn`` [B,S,A,D],
    ``vec_dqn_target`` [B,S,A,D], ``sp`` [B,S,A] (logits), ``sv`` [B,S,A].
    Target heads are deep copies of the online heads at init, read the backbone
    features detached and have ``requires_grad=False``: they change only in
    ``polyak_update`` and no gradient flows through them into the backbone.

    ``num_obs_states`` is required for discrete observations (the env's
    ``observation_space.n``, i.e. ``RecordSpec.num_obs_states``) and ignored otherwise.
    """

    def __init__(self, cfg: ModelConfig, spec: RecordSpec, heads: tuple[str, ...],
                 num_obs_states: int | None = None):
        super().__init__()
        heads = tuple(heads)
        unknown = [h for h in heads if h not in HEADS]
        if unknown:
            raise ValueError(f"unknown heads {unknown}; choose from {HEADS}")
        if not heads:
            raise ValueError(f"the model needs at least one head from {HEADS}")
        if len(set(heads)) != len(heads):
            raise ValueError(f"duplicate heads in {heads}")
        self.cfg = cfg
        self.spec = spec
        self.heads = tuple(h for h in HEADS if h in heads)  # canonical order
        self.num_obs_states = num_obs_states if spec.obs_kind == "discrete" else None
        self.embed = StepEmbedder(cfg, spec, self.num_obs_states)
        self.backbone = make_backbone(cfg)
        self.online_heads = nn.ModuleDict(
            {h: Head(cfg, head_out_shape(h, spec.num_actions, cfg.vec_dim)) for h in self.heads})
        self.target_heads = nn.ModuleDict(
            {h: copy.deepcopy(self.online_heads[h]) for h in self.heads if h in TARGET_HEADS})
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
            feats = feats[:, -1]  # [B, H]
        out = {h: head(feats) for h, head in self.online_heads.items()}
        if not last_only:
            detached = feats.detach()
            for h, head in self.target_heads.items():
                out[f"{h}_target"] = head(detached)
        return TensorDict(out, batch_size=feats.shape[:-1], device=feats.device)

    def polyak_update(self, dqn_tau: float = 0.0, vec_dqn_tau: float = 0.0) -> None:
        """θ_target ← τ·θ_online + (1−τ)·θ_target per target head; τ ≤ 0 leaves it."""
        for name, tau in (("dqn", dqn_tau), ("vec_dqn", vec_dqn_tau)):
            tau = float(tau)
            if tau > 1.0:
                raise ValueError(f"{name}_tau must be <= 1, got {tau}")
            if tau <= 0.0 or name not in self.target_heads:
                continue
            polyak_(self.target_heads[name], self.online_heads[name], tau)
