"""The one place mouse.replay touches TorchRL internals (underscore names).

Written for torchrl 0.14.x and tensordict 0.14.x. Underscore names are not API:
a new release may rename them or change what they mean without a warning, so
importing this module under any other version fails at once, with one line
naming the installed versions, rather than corrupting a buffer later.

What it reaches into, each because no public call does the job at the speed
the ingest path needs (``benchmarks/bench_replay.py``):

* ``storage_fields``: a ``TensorStorage``'s own TensorDict of ``[capacity, ...]``
  columns. The public ``storage[rows]`` indexes a TensorDict per call, ~3x the
  cost of slicing the three columns the sampler reads after each write, and
  covers only the rows written so far, so it cannot be written through.
* ``note_slice_write``: the bookkeeping ``TensorStorage.set`` does around a
  write (last cursor, length, content revision), for a writer that copied the
  rows into those columns itself: on a chunk of a few hundred records ``set``
  costs ~3x the copies (TensorDict indexing and per-key dispatch).
* ``writer_cursor`` and ``advance_writer``: ``RoundRobinWriter``'s cursor and
  write count, and the update notice it sends to the buffers reading the storage.
* ``SamplerHooks``: a TorchRL ``Sampler`` whose hooks that TorchRL calls by
  private names (``_empty`` from ``ReplayBuffer.empty``, ``_rng`` set by
  ``ReplayBuffer.set_rng``) land on the public ``reset()`` and ``generator``.

tensordict is checked too: the direct copies rely on the storage columns being
a TensorDict of plain or ``MemoryMappedTensor`` leaves, a layout that belongs
to the tensordict release as much as to TorchRL's.
"""

from __future__ import annotations

import re

import tensordict
import torch
import torchrl

WRITTEN_FOR = {"torchrl": "0.14", "tensordict": "0.14"}
"""Release series (major.minor) each package had when every access below was checked."""


def _series(version: str) -> str | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return f"{m[1]}.{m[2]}" if m else None


def check_versions(installed: dict[str, str]) -> None:
    """Raise ``ImportError`` (one line) unless each package in ``WRITTEN_FOR`` is of its series."""
    wrong = [f"{name} {series}.x (installed: {installed[name]})" for name, series in WRITTEN_FOR.items()
             if _series(installed[name]) != series]
    if wrong:
        raise ImportError(f"mouse.replay needs {' and '.join(wrong)}: its adapter "
                          f"mouse/replay/torchrl_compat.py touches TorchRL internals; check each access "
                          f"there against the installed release, then update WRITTEN_FOR")


# before importing TorchRL's submodules: on another release their paths may have moved, and
# the error should say why rather than name a missing module
check_versions({"torchrl": torchrl.__version__, "tensordict": tensordict.__version__})

from tensordict import TensorDictBase  # noqa: E402
from torchrl.data import RoundRobinWriter  # noqa: E402
from torchrl.data.replay_buffers.samplers import Sampler  # noqa: E402


def storage_fields(storage) -> TensorDictBase | None:
    """The storage's own TensorDict of ``[capacity, ...]`` columns (views write through);
    None before its first write (lazy storages allocate then) or if it holds something else."""
    fields = storage._storage if storage.initialized else None
    return fields if isinstance(fields, TensorDictBase) else None


def note_slice_write(storage, last_rows: slice, n: int) -> None:
    """What ``TensorStorage.set`` records around a write of ``n`` rows whose last part was
    ``last_rows``, for rows copied straight into ``storage_fields(storage)``."""
    storage._set_last_cursor(last_rows)
    storage._len = min(len(storage) + n, storage.max_size)
    storage._bump_mutation_revision()


def writer_cursor(writer: RoundRobinWriter) -> int:
    """The storage row the writer's next write starts at."""
    return writer._cursor


def advance_writer(writer: RoundRobinWriter, n: int, index: torch.Tensor) -> None:
    """What ``RoundRobinWriter.extend`` does after writing ``n`` rows at ``index``: move the
    cursor and write count on, and tell the buffers attached to the storage."""
    writer._cursor = (writer._cursor + n) % writer._storage.max_size
    writer._write_count += n
    writer._mark_update_entities(index)


class SamplerHooks(Sampler):
    """A TorchRL ``Sampler`` whose private hooks call public names: ``ReplayBuffer.empty()``
    calls ``_empty``, here ``reset()``; ``ReplayBuffer.set_rng`` sets ``_rng``, here ``generator``
    (None: torch's global generator)."""

    generator: torch.Generator | None = None

    def reset(self) -> None:
        raise NotImplementedError

    def _empty(self) -> None:
        self.reset()

    @property
    def _rng(self) -> torch.Generator | None:
        return self.generator

    @_rng.setter
    def _rng(self, generator: torch.Generator | None) -> None:
        self.generator = generator


def unchecked_tensordict(fields: dict, n):
    """A TensorDict [n] (or of batch size ``n`` when a tuple) over ``fields`` (CPU tensors with
    those leading dims) without the constructor's per-field checks, which cost more than the
    copies on the wire's decode path, and ~6x the tensordict acting builds per vector step."""
    from tensordict import TensorDict

    return TensorDict._new_unsafe(fields, batch_size=torch.Size([n] if isinstance(n, int) else n))
