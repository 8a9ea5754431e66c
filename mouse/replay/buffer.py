"""The learner's replay buffer: TorchRL parts composed in ``make_replay_buffer``.

    replay = make_replay_buffer(ReplayConfig(capacity=...), spec)  # -> StreamReplay
    n = replay.ingest(chunk)         # flat [N] records of one or more streams -> N
    len(replay)                      # stored steps
    replay.num_windows               # windows present for the current S
    batch = replay.sample(B, S)      # TensorDict [B, S], record fields only
    replay.save(directory)           # storage, writer cursor, sampler index, rng
    replay.restore(directory)        # into a buffer built with the same config and spec
    replay.buffer                    # the torchrl ReplayBuffer (storage, writer, sampler)

``ingest`` checks the whole chunk before writing anything and raises
``RecordError`` (a ``ValueError``) naming every problem: fields, dtypes, shapes
and values (``mouse.records.validate_records``), then, after grouping the chunk
by stream (stable, so a stream's records land in consecutive storage rows),
that each stream's records are consecutive steps (a vectorised check; the
per-stream report of ``continuity_problems`` only when it fails). It writes
with ``FifoSliceWriter``, a FIFO ``RoundRobinWriter`` that copies slices
(``writer.py``);
``StreamWindowSampler`` links each stream's pieces across chunks and splits
them at gaps and restarts (see ``sampler.py``).

One lock serialises ingest, sampling (index draw and gather), save and
restore, so a window is always read whole between two writes. Sampling draws
rows with the sampler and gathers each field with one ``index_select``
(TorchRL's ``ReplayBuffer.sample`` indexes with ``tensor[idx]``, several times
slower on CPU). ``sample`` raises ``NoWindowError`` while no window exists;
``PrefetchBatchifier`` waits instead.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer

from mouse.records import RecordError, RecordSpec, continuity_problems, next_time, validate_records
from mouse.replay.config import ReplayConfig
from mouse.replay.sampler import StreamWindowSampler
from mouse.replay.writer import FifoSliceWriter

FORMAT_VERSION = 1
_BOOKKEEPING = ("stream_id", "time", "done")


def _gather(x: torch.Tensor, index: torch.Tensor, B: int, S: int, pin_memory: bool) -> torch.Tensor:
    out = torch.empty((B * S, *x.shape[1:]), dtype=x.dtype, pin_memory=pin_memory)
    torch.index_select(x, 0, index, out=out)  # [B * S, ...]
    return out.view(B, S, *x.shape[1:])  # [B, S, ...]


def _bookkeeping(chunk: TensorDict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """stream_id, time, done as numpy views: the ingest checks are a few small reductions,
    and each costs several times less in numpy than in torch (fixed per-call overhead)."""
    return tuple(chunk.get(k).numpy(force=True) for k in _BOOKKEEPING)  # force: detach, cpu


def _consecutive(sid: np.ndarray, time: np.ndarray, done: np.ndarray) -> bool:
    """Each stream's records in a stream-grouped chunk are consecutive steps."""
    expected = next_time(time[:-1], done[:-1])
    return not ((sid[1:] == sid[:-1]) & (time[1:] != expected)).any()


def make_replay_buffer(cfg: ReplayConfig, spec: RecordSpec | None = None, seq_len: int = 16) -> "StreamReplay":
    """TorchRL storage (tensor or memmap) + FIFO writer + StreamWindowSampler.

    ``seq_len`` is the window length S indexed as records arrive (the learner's
    ``train.seq_len``); sampling another S re-indexes once, in O(S x capacity).
    """
    if cfg.storage == "memmap":
        storage = LazyMemmapStorage(cfg.capacity, scratch_dir=cfg.scratch_dir, existsok=True)
    else:
        storage = LazyTensorStorage(cfg.capacity)
    sampler = StreamWindowSampler(storage, seq_len)
    generator = torch.Generator().manual_seed(cfg.seed)  # the buffer hands it to the sampler
    buffer = ReplayBuffer(storage=storage, sampler=sampler, writer=FifoSliceWriter(), generator=generator)
    return StreamReplay(buffer, cfg, spec)


class StreamReplay:
    """A torchrl ``ReplayBuffer`` of step records with validated ingest and window sampling."""

    def __init__(self, buffer: ReplayBuffer, cfg: ReplayConfig, spec: RecordSpec | None):
        self.buffer = buffer
        self.cfg = cfg
        self.spec = spec
        self._lock = threading.RLock()
        self._layout: dict | None = None  # without a spec, the first chunk fixes the fields

    @property
    def lock(self) -> threading.RLock:
        """Held by ingest, sample, save and restore; hold it to read the storage consistently."""
        return self._lock

    @property
    def generator(self) -> torch.Generator:
        """The generator windows are drawn with (saved and restored); ``buffer.set_rng`` replaces it."""
        return self.sampler.generator

    @property
    def sampler(self) -> StreamWindowSampler:
        return self.buffer.sampler

    @property
    def storage(self):
        return self.buffer.storage

    def __len__(self) -> int:
        return len(self.buffer)

    @property
    def num_windows(self) -> int:
        return self.sampler.num_windows

    @property
    def num_streams(self) -> int:
        return self.sampler.num_streams

    # ---------------------------------------------------------------- ingest

    def ingest(self, chunk: TensorDict, *, checked: bool = False) -> int:
        """Validate and store a flat ``[N]`` chunk of records; returns N. Nothing is written on error.

        ``checked=True`` skips the checks for a chunk that already passed
        ``validate_records`` (continuity included) against this spec, as
        ``mouse.wire.decode_chunk`` does: the learner's hot path checks each chunk once.
        """
        if not checked:
            self._check(chunk)
        n = chunk.batch_size[0]
        if n == 0:
            return 0
        if n > self.cfg.capacity:
            raise ValueError(f"chunk of {n} steps is larger than the replay capacity {self.cfg.capacity}")
        sid, time, done = _bookkeeping(chunk)
        if n > 1 and (sid[1:] < sid[:-1]).any():
            # a stream's records become consecutive storage rows: windows read contiguous memory
            order = torch.from_numpy(np.argsort(sid, kind="stable"))
            chunk = chunk.apply(lambda x: x.index_select(0, order))
            sid, time, done = _bookkeeping(chunk)
        if not checked and not _consecutive(sid, time, done):  # the per-stream report only on failure
            raise RecordError(continuity_problems(chunk))
        with self._lock:
            self.buffer.extend(chunk)
        return n

    def _check(self, chunk: TensorDict) -> None:
        if self.spec is not None:
            validate_records(chunk, self.spec, consecutive=False)
            return
        if chunk.batch_dims != 1:
            raise RecordError([f"records must have one batch dim [N], got {tuple(chunk.batch_size)}"])
        layout = {k: (v.dtype, tuple(v.shape[1:])) for k, v in chunk.items(True, True)}
        problems = [f"{k}: missing or not int64 per-step scalar" for k in _BOOKKEEPING
                    if layout.get(k) != (torch.int64, ())]
        if self._layout is not None and layout != self._layout:
            problems.append(f"fields {layout} differ from the stored fields {self._layout}")
        if problems:
            raise RecordError(problems)
        self._layout = layout

    # -------------------------------------------------------------- sampling

    def sample(self, batch_size: int, seq_len: int | None = None, *, pin_memory: bool = False) -> TensorDict:
        """``batch_size`` windows of ``seq_len`` (default: the sampler's) records: ``[B, S]``.

        The sampler draws the rows (TorchRL ``Sampler.sample``); each field is then one
        ``index_select`` over the storage, written straight into pinned memory if asked.
        Raises ``NoWindowError`` while the buffer holds no window.
        """
        B, S = batch_size, seq_len or self.sampler.seq_len
        with self._lock:
            self.sampler.set_seq_len(S)
            index, _ = self.sampler.sample(self.storage, B * S)  # [B * S] storage rows, window-major
            return self.storage[:].apply(lambda x: _gather(x, index, B, S, pin_memory), batch_size=[B, S])

    # --------------------------------------------------------------- memory

    def nbytes(self) -> dict[str, int]:
        """Bytes held: record storage and the sampler's index."""
        row = 0
        if len(self.storage):
            row = sum(t[0].numel() * t.element_size() for t in self.storage[:1].values(True, True))
        return {"storage": row * self.cfg.capacity, "index": self.sampler.nbytes}

    # ------------------------------------------------------- save / restore

    def save(self, directory) -> None:
        """Write contents and sampler state to ``directory`` (replaced whole, via a temporary sibling)."""
        path = Path(directory).absolute()
        tmp = path.with_name(path.name + ".saving")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with self._lock:
            steps = len(self.buffer)
            if self.storage.initialized:
                self.storage.dumps(tmp / "storage")
            self.buffer.writer.dumps(tmp / "writer")
            self.sampler.dumps(tmp / "sampler")
            torch.save({"rng": self.generator.get_state()}, tmp / "rng.pt")
            meta = {"format": FORMAT_VERSION, "capacity": self.cfg.capacity, "steps": steps,
                    "spec": self.spec.to_dict() if self.spec else None,
                    "layout": {k: [str(d), list(s)] for k, (d, s) in (self._layout or {}).items()}}
            (tmp / "replay.json").write_text(json.dumps(meta, indent=1))
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)

    def restore(self, directory) -> None:
        """Load what ``save`` wrote; the buffer must have the same capacity and record spec."""
        path = Path(directory)
        meta = json.loads((path / "replay.json").read_text())
        if meta["format"] != FORMAT_VERSION:
            raise ValueError(f"replay format {meta['format']} in {path}, expected {FORMAT_VERSION}")
        if meta["capacity"] != self.cfg.capacity:
            raise ValueError(f"saved replay has capacity {meta['capacity']}, this one {self.cfg.capacity}")
        saved_spec = RecordSpec.from_dict(meta["spec"]) if meta["spec"] else None
        if self.spec is not None and saved_spec is not None and saved_spec != self.spec:
            raise ValueError(f"saved replay holds records of {saved_spec}, this buffer expects {self.spec}")
        with self._lock:
            self.buffer.empty()
            if meta["steps"]:
                self.storage.loads(path / "storage")
            self.buffer.writer.loads(path / "writer")
            self.sampler.loads(path / "sampler")
            self.generator.set_state(torch.load(path / "rng.pt", weights_only=True)["rng"])
            if meta["layout"]:
                self._layout = {k: (getattr(torch, d.removeprefix("torch.")), tuple(s))
                                for k, (d, s) in meta["layout"].items()}
