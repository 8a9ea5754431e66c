"""FifoSliceWriter: TorchRL's FIFO ``RoundRobinWriter``, writing a chunk as one or two slices.

Same cursor, indices and FIFO order as ``RoundRobinWriter``; ``copy_`` into
slices instead of ``index_put_`` with an index tensor, which is several times
slower on CPU. Once the storage exists, each field is copied straight into the
storage's own column, and the length/cursor bookkeeping ``TensorStorage.set``
would do is done by the adapter (``torchrl_compat``): on a chunk of a few
hundred records ``set`` costs ~3x more (TensorDict indexing, ``to``, per-key
dispatch) than these copies. The first write still goes through ``set``, which
allocates the storage from it.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.data import RoundRobinWriter

from mouse.replay import torchrl_compat as compat


def _plain(x: torch.Tensor) -> torch.Tensor:
    # a MemoryMappedTensor (memmap storage) is a tensor subclass: plain views of the same
    # memory slice several times faster
    return x if type(x) is torch.Tensor else x.as_subclass(torch.Tensor)


class FifoSliceWriter(RoundRobinWriter):
    """``RoundRobinWriter`` that writes a chunk as one or two contiguous slices."""

    storage = None  # set by the ReplayBuffer through register_storage

    def register_storage(self, storage) -> None:
        super().register_storage(storage)
        self.storage = storage

    def extend(self, data) -> torch.Tensor:
        storage = self.storage
        n, cap, cur = len(data), storage.max_size, compat.writer_cursor(self)
        if not 0 < n <= cap:
            raise ValueError(f"cannot write {n} rows into a storage of {cap}")
        head = min(n, cap - cur)
        parts = [(slice(cur, cur + head), slice(0, head))]  # (storage rows, chunk rows)
        if head < n:  # wrap around
            parts.append((slice(0, n - head), slice(head, n)))
        pairs = self._field_pairs(data)
        if pairs is None:  # first write (the storage allocates itself from it) or another layout
            for rows, part in parts:
                storage.set(rows, data[part])
        else:
            for dst, src in pairs:
                if head == n:  # the usual case: no wrap, so no need to slice the chunk
                    dst[cur:cur + n].copy_(src)
                    continue
                for rows, part in parts:
                    dst[rows].copy_(src[part])
            compat.note_slice_write(storage, parts[-1][0], n)
        index = torch.arange(cur, cur + n)
        if head < n:
            index %= cap
        compat.advance_writer(self, n, index)
        return index

    def _field_pairs(self, data) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """(storage column, chunk tensor) per field; None unless both hold exactly the same plain
        tensor fields (then ``TensorStorage.set`` decides: it allocates, handles nesting, raises)."""
        store = compat.storage_fields(self.storage)
        if store is None or type(data) is not TensorDict or data.batch_dims != 1:
            return None
        dst, src = dict(store.items()), dict(data.items())
        if dst.keys() != src.keys() or not all(isinstance(x, torch.Tensor)
                                               for x in (*dst.values(), *src.values())):
            return None
        return [(_plain(dst[k]), src[k]) for k in dst]
