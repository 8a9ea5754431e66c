"""Model hyperparameters. Observation and action sizes come from the RecordSpec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mouse import heads as registry

BACKBONES = ("mlp", "transformer")
# the heads registered at import (the built-ins), for callers that want a tuple;
# the model reads mouse.heads itself, so a head registered later works there too
HEADS = registry.head_names()
# heads that keep a Polyak-averaged target copy, read by the TD-style losses
TARGET_HEADS = registry.target_head_names()


@dataclass(frozen=True)
class ModelConfig:
    backbone: Literal["mlp", "transformer"] = "mlp"
    """mlp: every step on its own (no context); transformer: causal attention over the window."""
    hidden_dim: int = 128
    """Width of the step embedding, of every backbone layer and of the head hidden layers."""
    num_layers: int = 2
    """Backbone depth: Linear+LayerNorm+ReLU layers (mlp) or transformer blocks."""
    num_attention_heads: int = 4
    """Attention heads per transformer block; must divide hidden_dim."""
    ff_mult: int = 4
    """Transformer feed-forward width as a multiple of hidden_dim."""
    max_seq_len: int = 64
    """Longest window the transformer accepts (size of its learned position table)."""
    vec_dim: int = 8
    """Size D of each action vector of the vec_dqn head; even, since RoPE rotates pairs."""
    max_time: int = 1000
    """Time embedding table covers steps 0..max_time; later steps share the max_time row."""
    head_layers: int = 1
    """Hidden layers (of width hidden_dim) in each head before its output layer; 0 = linear head."""
    conv_channels: tuple[int, ...] = (16, 32, 32)
    """Output channels of the stride-2 3x3 convolutions of the image encoder."""
    dropout: float = 0.0
    """Dropout in the backbone (train mode only); 0 keeps online and acting outputs deterministic."""

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        for name in ("hidden_dim", "num_layers", "num_attention_heads", "ff_mult",
                     "max_seq_len", "vec_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vec_dim % 2:
            raise ValueError(f"vec_dim must be even (RoPE rotates pairs), got {self.vec_dim}")
        if self.hidden_dim % self.num_attention_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must divide "
                             f"hidden_dim ({self.hidden_dim})")
        if self.max_time < 0:
            raise ValueError(f"max_time must be >= 0, got {self.max_time}")
        if self.head_layers < 0:
            raise ValueError(f"head_layers must be >= 0, got {self.head_layers}")
        if not self.conv_channels or any(c < 1 for c in self.conv_channels):
            raise ValueError(f"conv_channels must be non-empty positive ints, got {self.conv_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        # tyro / json may hand over a list
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
