"""The learner's replay buffer: TorchRL parts composed in ``make_replay_buffer``.

    replay = make_replay_buffer(ReplayConfig(capacity=...), spec)  # -> StreamReplay
    n = replay.ingest(chunk)         # flat [N] records of one or more streams -> N
    len(replay)                      # stored steps
    replay.num_windows               # windows present for the current S
    batch = replay.sample(B, S)      # TensorDict [B, S], record fields only
    replay.save(directory)           # rows written since the last save, sampler index, rng
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

import contextlib
import re
import threading
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer

from mouse.durable import fsync_dir, save_durably, write_file
from mouse.records import RecordError, RecordSpec, continuity_problems, next_time, validate_records
from mouse.replay.config import ReplayConfig
from mouse.replay.sampler import StreamWindowSampler
from mouse.replay.writer import ArrayChunks, FifoSliceWriter

FORMAT_VERSION = 2  # 2: incremental row files + state files (1: one directory per save)
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
        self._saved: tuple[Path, int, list] | None = None  # (directory, written, row files) of the last save

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

    def ingest_arrays(self, chunks: list[dict[str, np.ndarray]]) -> int:
        """Store chunks that passed ``ingest``'s checks, each grouped by stream (as ``ingest``
        leaves a chunk), given as {field: numpy array [n_i, ...]} (read-only frame views are
        fine: each is copied once, into the storage): the same rows and windows as ingesting
        them one by one, in one write per field (more only to stay within the capacity); returns
        the records stored. A chunk larger than the capacity, or of other fields, dtypes or
        shapes than the stored records, raises ValueError before anything is written."""
        C, groups, size = self.cfg.capacity, [[]], 0
        for chunk in chunks:
            n = len(next(iter(chunk.values())))
            if n > C:
                raise ValueError(f"chunk of {n} steps is larger than the replay capacity {C}")
            if size + n > C:  # a write never laps the ring (the sampler indexes one pass at a time)
                groups.append([])
                size = 0
            groups[-1].append(chunk)
            size += n
        total = 0
        with self._lock:
            for group in groups:
                if group:
                    total += len(self.buffer.extend(ArrayChunks(group)))
        return total

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

    def save(self, directory, keep: int = 2) -> int:
        """Save to ``directory`` what changed since this buffer's last save there; returns the
        rows written so far (``written``, the saved state's name).

        Incremental, for the FIFO ring: a row file ``rows-A-B.pt`` holds the records at write
        positions A..B-1 (position g sits in slot g % capacity), and a state file ``state-W.pt``
        holds the writer, sampler index and rng after W rows and names the row files that hold
        the last min(W, capacity) rows. A save copies out, under the lock, only the rows written
        since its last save to this directory (all of them the first time) and the small state,
        then writes a new row file and a new state file, each fsynced before the next step, so a
        kill at any point leaves the previous state whole. It then deletes states beyond the
        newest ``keep`` and the row files no kept state names. ``OSError`` (a full disk) leaves
        the previous states as they were; the next save writes what this one did not.
        """
        path = Path(directory).absolute()
        path.mkdir(parents=True, exist_ok=True)
        C = self.cfg.capacity
        with self._lock:
            sampler = self.sampler.state_dict()  # copies
            written = sampler["written"]
            ours = self._saved is not None and self._saved[0] == path  # else a full save
            last = self._saved if ours else (path, 0, [])
            first = max(last[1], written - C)  # rows older than W - C are gone from the ring
            rows = self._copy_rows(first, written) if first < written else None
            state = {"format": FORMAT_VERSION, "capacity": C, "written": written,
                     "spec": self.spec.to_dict() if self.spec else None,
                     "layout": {k: [str(d), list(s)] for k, (d, s) in (self._layout or {}).items()},
                     "writer": self.buffer.writer.state_dict(), "sampler": sampler,
                     "rng": self.generator.get_state()}
        segments = [seg for seg in last[2] if seg[1] > written - C]
        if rows is not None:
            rows_file = path / _rows_name(first, written)
            write_file(rows_file, rows)
            segments.append([first, written])
        try:
            save_durably({**state, "segments": segments}, path / _state_name(written))
        except BaseException:  # no state names the rows: the next save writes them again
            if rows is not None:
                with contextlib.suppress(OSError):
                    rows_file.unlink()
            raise
        self._saved = (path, written, segments)
        self._prune(path, keep if ours else 1)
        return written

    def _copy_rows(self, first: int, end: int) -> dict[str, torch.Tensor]:
        """Copies of the records at write positions first..end-1 (hold the lock)."""
        C = self.cfg.capacity
        start, n = first % C, end - first
        slots = [slice(start, start + min(n, C - start))]
        if n > C - start:  # wraps around
            slots.append(slice(0, n - (C - start)))
        stored = self.storage[:]  # views of the stored rows, slot order
        return {key: torch.cat([col.as_subclass(torch.Tensor)[s] for s in slots])  # [n, ...] copies
                for key, col in stored.items(True, True)}

    def _prune(self, path: Path, keep: int) -> None:
        """Keep the state just saved and the ``keep`` - 1 before it, and the row files they need.

        A state after W rows needs the rows from position W - capacity on, so a row file ending
        at or before (oldest kept W) - capacity goes. Every other row file here belongs to this
        buffer's saves (``restore`` deletes the ones newer than the state it loads); with
        ``keep`` 1 (the first save into a directory: whatever is there is not this buffer's)
        only the row files of the state just saved stay."""
        written, segments = self._saved[1:]
        states = sorted(w for w, _ in _saved_states(path) if w <= written)[-keep:]
        for w, file in _saved_states(path):
            if w not in states:
                file.unlink(missing_ok=True)
        ours = {_rows_name(a, b) for a, b in segments}
        for end, file in _row_files(path):
            if file.name not in ours and (keep == 1 or end <= states[0] - self.cfg.capacity):
                file.unlink(missing_ok=True)
        fsync_dir(path)

    def restore(self, directory, written: int | None = None) -> int:
        """Load a state ``save`` wrote: the one after ``written`` rows if it is there and loads,
        else the newest that loads; returns its ``written``. States newer than it are deleted
        (a later save would mix them with this buffer's rows). Raises ``ReplayMismatch`` (a
        ValueError) when it was saved for another capacity or record spec, ``UnreadableReplay``
        when no state loads (the buffer is then empty)."""
        path = Path(directory).absolute()
        states = sorted(_saved_states(path), key=lambda s: (s[0] != written, -s[0]))
        problems = []
        for w, file in states:
            try:
                state = torch.load(file, weights_only=True)
                self._check_saved(state, path)
                with self._lock:
                    self._load(path, state)
            except ReplayMismatch:
                raise
            except Exception as e:  # a damaged or missing file: try the state before
                problems.append(f"{file.name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                with self._lock:
                    self.buffer.empty()
                continue
            # newer states and their rows are not this buffer's past: a later save must not mix them in
            for newer, newer_file in states:
                if newer > w:
                    newer_file.unlink(missing_ok=True)
            for _, file in _row_files(path):
                if _row_range(file)[0] >= w:
                    file.unlink(missing_ok=True)
            self._saved = (path, w, state["segments"])
            return w
        if not problems:
            raise UnreadableReplay(f"{path} holds no saved replay state")
        raise UnreadableReplay(f"no saved replay state in {path} loads: {'; '.join(problems)}")

    def _check_saved(self, state: dict, path: Path) -> None:
        if state["format"] != FORMAT_VERSION:
            raise ReplayMismatch(f"replay format {state['format']} in {path}, expected {FORMAT_VERSION}")
        if state["capacity"] != self.cfg.capacity:
            raise ReplayMismatch(f"saved replay has capacity {state['capacity']}, this one {self.cfg.capacity}")
        saved_spec = RecordSpec.from_dict(state["spec"]) if state["spec"] else None
        if self.spec is not None and saved_spec is not None and saved_spec != self.spec:
            raise ReplayMismatch(f"saved replay holds records of {saved_spec}, this buffer expects {self.spec}")

    def _load(self, path: Path, state: dict) -> None:
        """Put the saved rows back into their slots, then the writer, sampler and rng (hold the lock)."""
        C, written = self.cfg.capacity, state["written"]
        first = max(0, written - C)
        parts, expect = [], first
        for a, b in state["segments"]:
            rows = TensorDict(torch.load(path / _rows_name(a, b), weights_only=True), batch_size=[b - a])
            if b <= expect or a > expect:
                raise ValueError(f"row files do not cover positions {first}..{written - 1}")
            parts.append(rows[expect - a:])
            expect = b
        if expect != written:
            raise ValueError(f"row files end at position {expect}, the state at {written}")
        self.buffer.empty()
        if parts:
            rows, start = torch.cat(parts), first % C  # [min(written, C)] records, write order
            head = min(len(rows), C - start)
            self.storage.set(slice(start, start + head), rows[:head])
            if head < len(rows):
                self.storage.set(slice(0, len(rows) - head), rows[head:])
        self.buffer.writer.load_state_dict(state["writer"])
        self.sampler.load_state_dict(state["sampler"])
        self.generator.set_state(state["rng"])
        if state["layout"]:
            self._layout = {k: (getattr(torch, d.removeprefix("torch.")), tuple(s))
                            for k, (d, s) in state["layout"].items()}


class ReplayMismatch(ValueError):
    """A saved replay of another capacity or record spec than the buffer restoring it."""


class UnreadableReplay(RuntimeError):
    """No saved replay state in a directory could be loaded."""


def _rows_name(first: int, end: int) -> str:
    return f"rows-{first:012d}-{end:012d}.pt"


def _state_name(written: int) -> str:
    return f"state-{written:012d}.pt"


def _row_range(file: Path) -> tuple[int, int]:
    first, end = file.stem.split("-")[1:]
    return int(first), int(end)


def _row_files(path: Path) -> list[tuple[int, Path]]:
    """(end position, file) of each row file in ``path``."""
    return [(_row_range(file)[1], file) for file in path.glob("rows-*.pt")
            if re.fullmatch(r"rows-\d+-\d+\.pt", file.name)]


def _saved_states(path: Path) -> list[tuple[int, Path]]:
    """(written, file) of each state file in ``path``."""
    found = []
    for file in path.glob("state-*.pt"):
        m = re.fullmatch(r"state-(\d+)\.pt", file.name)
        if m:
            found.append((int(m[1]), file))
    return found
