"""Configuration of the learner's replay buffer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ReplayConfig:
    capacity: int = 1_000_000
    """Stored steps (records); when full the oldest are overwritten first (FIFO)."""
    storage: Literal["tensor", "memmap"] = "tensor"
    """tensor: TorchRL LazyTensorStorage in RAM; memmap: LazyMemmapStorage files (large or persistent buffers)."""
    scratch_dir: str | None = None
    """Directory of the memmap files (storage "memmap" only); None: temporary files, in /dev/shm
    (memory, as with "tensor") where it has room, else the temporary directory, removed at exit."""
    seed: int = 0
    """Seed of the generator that draws windows."""

    def __post_init__(self):
        if self.capacity < 1:
            raise ValueError(f"replay capacity must be >= 1 step, got {self.capacity}")
        if self.storage not in ("tensor", "memmap"):
            raise ValueError(f"replay storage must be 'tensor' or 'memmap', got {self.storage!r}")
        if self.scratch_dir is not None and self.storage != "memmap":
            raise ValueError("replay scratch_dir only applies to storage='memmap'")
