"""Backbones: [B, S, H] step embeddings -> [B, S, H] features.

``mlp`` treats every step on its own. ``transformer`` is causal over the window:
the feature at step t depends on steps <= t only, so the same weights serve the
learner (whole windows) and the actors (a rolling context whose last step acts).
Attention crosses episode boundaries on purpose (the done and time embeddings
tell the model where an episode starts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class MlpBackbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(cfg.num_layers):
            layers += [nn.Linear(cfg.hidden_dim, cfg.hidden_dim), nn.LayerNorm(cfg.hidden_dim),
                       nn.ReLU(), nn.Dropout(cfg.dropout)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.qkv = nn.Linear(cfg.hidden_dim, 3 * cfg.hidden_dim)
        self.out = nn.Linear(cfg.hidden_dim, cfg.hidden_dim)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, h // self.num_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, nh, S, hd]
        p = self.dropout if self.training else 0.0
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        return self.out(y.transpose(1, 2).reshape(b, s, h))  # [B, S, H]


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.hidden_dim
        self.ln1 = nn.LayerNorm(h)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(h)
        self.ff = nn.Sequential(nn.Linear(h, cfg.ff_mult * h), nn.GELU(),
                                nn.Linear(cfg.ff_mult * h, h))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), attn_mask))
        return x + self.drop(self.ff(self.ln2(x)))


class TransformerBackbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.max_seq_len = cfg.max_seq_len
        # positions index the window (0 = oldest step), not the episode: time has its own embedding
        self.pos = nn.Embedding(cfg.max_seq_len, cfg.hidden_dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden_dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, S, H]; valid [B, S] bool (optional): padding steps are never attended to."""
        b, s, _ = x.shape
        if s > self.max_seq_len:
            raise ValueError(f"window of {s} steps exceeds the transformer's max_seq_len "
                             f"{self.max_seq_len} (raise ModelConfig.max_seq_len)")
        x = x + self.pos.weight[:s]
        mask = None
        if valid is not None:
            causal = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()  # [S, S]
            eye = torch.eye(s, dtype=torch.bool, device=x.device)
            # a step always sees itself, so a padding query still has one key (no NaN rows)
            mask = causal & (valid.bool()[:, None, :] | eye)  # [B, S(query), S(key)]
            mask = mask[:, None]  # [B, 1, S, S], broadcast over heads
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)


def make_backbone(cfg: ModelConfig) -> nn.Module:
    return MlpBackbone(cfg) if cfg.backbone == "mlp" else TransformerBackbone(cfg)
