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

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import RoundRobinWriter

from mouse.replay import torchrl_compat as compat


def _plain(x: torch.Tensor) -> torch.Tensor:
    # a MemoryMappedTensor (memmap storage) is a tensor subclass: plain views of the same
    # memory slice several times faster
    return x if type(x) is torch.Tensor else x.as_subclass(torch.Tensor)


def _same_layout(chunks: list[dict[str, np.ndarray]], dsts: dict[str, np.ndarray]) -> bool:
    """Every chunk has exactly the columns' fields, dtypes and per-record shapes (checked per
    chunk and field before anything is written: the cheapest comparisons first, since a burst
    runs this a few hundred times)."""
    want, keys = [(k, d.dtype, d.shape[1:]) for k, d in dsts.items()], dsts.keys()
    for c in chunks:
        if c.keys() != keys:
            return False
        for k, dtype, shape in want:
            a = c[k]
            if (a.dtype is not dtype and a.dtype != dtype) or a.shape[1:] != shape:
                return False
    return True


class ArrayChunks:
    """Several checked chunks for one write: each a dict {field: numpy array [n_i, ...]} (read-only
    frame views are fine: they are copied once, into the storage). ``ReplayBuffer.extend`` hands
    it to the writer untouched; ``len`` is the total record count."""

    def __init__(self, chunks: list[dict[str, np.ndarray]]):
        self.chunks = chunks
        self.n = sum(len(next(iter(c.values()))) for c in chunks)

    def __len__(self) -> int:
        return self.n

    def tensordict(self) -> TensorDict:
        """The records as one TensorDict (copies): for a first write, which allocates the storage."""
        keys = self.chunks[0].keys()
        return TensorDict({k: torch.from_numpy(np.concatenate([c[k] for c in self.chunks])) for k in keys},
                          batch_size=[self.n])


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
        if isinstance(data, ArrayChunks):
            written = self._write_arrays(data, cur, head)
            pairs = [] if written else None
            data = data if written else data.tensordict()
        else:
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

    def _write_arrays(self, data: ArrayChunks, cur: int, head: int) -> bool:
        """Copy each field of all the chunks into its storage column in one call (one or two
        slices): numpy views of the CPU columns, so no torch dispatch per chunk and field. False
        (nothing written) unless the storage exists on the CPU with exactly the chunks' fields."""
        store = compat.storage_fields(self.storage)
        if store is None:
            return False
        columns = {k: _plain(col) for k, col in store.items()}
        if not all(
                isinstance(col, torch.Tensor) and col.device.type == "cpu" for col in columns.values()):
            return False
        dsts = {k: col.numpy() for k, col in columns.items()}
        if not _same_layout(data.chunks, dsts):
            raise ValueError("chunks with other fields, dtypes or shapes than the stored records")
        n = data.n
        for key, dst in dsts.items():
            src = [c[key] for c in data.chunks]
            if head == n:  # the usual case: no wrap, straight from the frames into the rows
                if len(src) == 1:
                    dst[cur:cur + n] = src[0]
                else:
                    np.concatenate(src, out=dst[cur:cur + n])
                continue
            rows = np.concatenate(src)  # wraps around: once per pass over the ring
            dst[cur:] = rows[:head]
            dst[:n - head] = rows[head:]
        return True

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
