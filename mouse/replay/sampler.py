"""StreamWindowSampler: uniform windows of S consecutive records of one stream.

A TorchRL ``Sampler`` whose ``sample(storage, B * S)`` returns the flat storage
rows of B windows (row-major, ``[B * S]``; reshape to ``[B, S]``). Every window
present in the buffer is equally likely. A window never skips a step and never
joins two streams; it may cross an episode boundary (the losses mask that pair),
so short episodes still train.

Instead of rescanning the storage on every call (as ``SliceSampler`` does), the
index is updated as rows are written, in O(rows written):

* per storage slot (5 bytes): ``next`` (int32), the slot of the same stream's
  next record, -1 at a segment end; ``valid`` (bool), the slot starts a window,
  i.e. S-1 successors follow it. A *segment* is a run of one stream's records
  with no missing step.
* per stream (not per row): its last record (time, done, position) and the
  positions of its segment's last S-1 rows, the only rows of a segment that are
  not window starts yet.

Positions are global write counts: row g sits in slot ``g % capacity`` and is
present while ``g >= written - capacity``. The writer must write FIFO like TorchRL's
``RoundRobinWriter`` (checked on every write), so a row's successors are newer
than it: when a row is overwritten every window starting at an older row is
already gone, and clearing the overwritten slots is the whole eviction.

A piece of a stream continues its stored segment only when its first record
follows the stream's last *stored and still present* record: time + 1 after an
alive step, time 0 after a terminal/truncated one. Otherwise (a missing chunk,
an actor restart, a resent chunk, an evicted predecessor) it starts a new
segment and no window spans the break. A gap that removes whole episodes and
happens to line up on a reset (``time 0`` after ``done != 0``) is
indistinguishable from a real boundary; such a window still only pairs records
across an episode boundary, which the losses mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mouse.records import next_time
from mouse.replay.torchrl_compat import SamplerHooks, storage_fields


class NoWindowError(RuntimeError):
    """The buffer holds no window of S consecutive records of one stream yet."""


@dataclass(slots=True)
class _Stream:
    last_time: int
    last_done: int
    last_g: int  # global position of the stream's last stored record
    tail: list[int] = field(default_factory=list)  # last <= S-1 positions of its segment (not window starts)


def _slices(start: int, n: int, capacity: int) -> list[slice]:
    """Slots start, start+1, ... (n of them, mod capacity) as one or two slices."""
    head = min(n, capacity - start)
    return [slice(start, start + head)] + ([slice(0, n - head)] if head < n else [])


def _circular(column: np.ndarray, start: int, n: int) -> np.ndarray:
    """``column`` at slots start, start+1, ... (n of them, mod its length): a view unless it wraps."""
    if start + n <= len(column):
        return column[start:start + n]
    return np.concatenate([column[sl] for sl in _slices(start, n, len(column))])


def _last_positions(g_first: list, m: list, first: int, last: int, n: int, prefix: list) -> list[int]:
    """The last ``n`` positions of a segment made of ``prefix`` and the pieces first..last
    (piece k: m[k] rows from position g_first[k])."""
    parts, k = [], last
    while n > 0 and k >= first:
        take = min(n, m[k])
        end = g_first[k] + m[k]
        parts.append(range(end - take, end))
        n, k = n - take, k - 1
    tail = [g for part in reversed(parts) for g in part]
    return prefix[-n:] + tail if n > 0 and prefix else tail


def _put(column: np.ndarray, start: int, values: np.ndarray) -> None:
    """Write ``values`` into ``column`` at slots start, start+1, ... (mod its length)."""
    done = 0
    for sl in _slices(start, len(values), len(column)):
        m = sl.stop - sl.start
        column[sl] = values[done:done + m]
        done += m


class StreamWindowSampler(SamplerHooks):
    """Samples windows of ``seq_len`` consecutive records of one stream, uniformly."""

    VALID, NEXT = torch.bool, torch.int32  # the index per storage slot: a window starts here; the next row
    SLOT_BYTES = VALID.itemsize + NEXT.itemsize

    def __init__(self, storage, seq_len: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self._store = storage  # read back stream_id/time/done of written rows
        self.capacity = int(storage.max_size)
        self.seq_len = int(seq_len)
        self.reset()

    def reset(self) -> None:
        """Forget every row and stream (``ReplayBuffer.empty`` calls this)."""
        C = self.capacity
        self._set_index(torch.zeros(C, dtype=self.VALID), torch.full((C,), -1, dtype=self.NEXT))
        self._n_valid = 0
        self._written = 0
        self._pruned_at = 0
        self._streams: dict[int, _Stream] = {}

    # ---------------------------------------------------------------- writes

    def _set_index(self, valid: torch.Tensor, nxt: torch.Tensor) -> None:
        """Install the per-slot index. Writes go through numpy views of the same memory: a
        chunk's index update is a dozen small ops, and each numpy op costs a fraction of the
        torch one (torch's fixed per-call overhead; index_put is slow on CPU)."""
        self._valid, self._next = valid, nxt
        self._valid_np, self._next_np = valid.numpy(), nxt.numpy()

    def _rows(self, key: str, slot: int, n: int) -> np.ndarray:
        """Field ``key`` of the n rows just written from ``slot`` on: FIFO writes are one or two
        contiguous slices, so read them as numpy views of the storage's own column (a copy only
        on wrap-around) rather than index the storage's TensorDict (``storage[rows]``)."""
        column = storage_fields(self._store).get(key)  # [capacity, ...]
        if type(column) is not torch.Tensor:  # MemoryMappedTensor (memmap storage): same memory
            column = column.as_subclass(torch.Tensor)
        return _circular(column.numpy(), slot, n)  # views, no copy

    def extend(self, index: torch.Tensor) -> None:
        index = torch.as_tensor(index).numpy(force=True).reshape(-1)
        n, C, g0 = len(index), self.capacity, self._written
        if n == 0:
            return
        if n > C:
            raise ValueError(f"cannot write {n} rows at once into a buffer of capacity {C}")
        slot = g0 % C
        if index[0] != slot or index[-1] != (g0 + n - 1) % C:
            raise RuntimeError("StreamWindowSampler needs FIFO writes (a RoundRobinWriter): "
                               f"expected slots {slot}.., got {index[:4].tolist()}..")
        sid, time, done = (self._rows(k, slot, n) for k in ("stream_id", "time", "done"))  # [n] each
        # the overwritten slots held the oldest rows: only their own windows and links go
        # (the writes of next and valid below replace them whole)
        self._n_valid -= sum(int(np.count_nonzero(self._valid_np[sl])) for sl in _slices(slot, n, C))
        self._written = g0 + n
        # row j+1 continues row j: same stream, next step (time 0 after a finished episode);
        # whether the last row continues is up to the next write
        expected = next_time(time[:-1], done[:-1])
        cont = np.zeros(n, dtype=bool)
        cont[:-1] = (sid[1:] == sid[:-1]) & (time[1:] == expected)
        rows = np.arange(n)
        _put(self._next_np, slot, np.where(cont, (rows + slot + 1) % C, -1))
        # pieces: maximal runs of consecutive steps of one stream, in write order
        first = np.ones(n, dtype=bool)
        first[1:] = ~cont[:-1]
        starts = np.flatnonzero(first)
        ends = np.empty_like(starts)  # exclusive
        ends[:-1], ends[-1] = starts[1:], n
        lengths = ends - starts
        starts_here = np.repeat(ends, lengths) - rows > self.seq_len - 1  # S-1 successors in its piece
        _put(self._valid_np, slot, starts_here)
        self._n_valid += int(np.count_nonzero(starts_here))
        self._join(g0, starts, lengths, sid[starts], time[starts], time[ends - 1], done[ends - 1])
        if self._written - self._pruned_at >= C:  # forget streams whose records are all gone
            oldest = self._written - C
            self._streams = {s: st for s, st in self._streams.items() if st.last_g >= oldest}
            self._pruned_at = self._written

    def _join(self, g0: int, starts, lengths, sids, first_times, last_times, last_dones) -> None:
        """Link each piece (arrays over the pieces, in write order) to the segment before it:
        its stream's stored one, or an earlier piece of the same write (a burst of chunks holds
        several pieces of each stream). Rows that now have S-1 successors in their segment
        become window starts; each stream keeps its segment's last S-1 positions as its tail.

        The same index and stream state as joining the pieces one at a time, but in numpy over
        all pieces: Python steps once per stream written (its stored state), not per piece."""
        S1 = self.seq_len - 1
        order = np.argsort(sids, kind="stable")  # [P]: each stream's pieces together, in write order
        s, m, t0 = sids[order], lengths[order], first_times[order]
        g_first = starts[order] + g0  # [P] global positions
        t_last, d_last = last_times[order], last_dones[order]
        head = np.ones(len(s), dtype=bool)  # [P] the stream's first piece in this write
        np.not_equal(s[1:], s[:-1], out=head[1:])
        # a later piece continues the stream's piece before it (present: it was just written)
        joins = ~head[1:] & (t0[1:] == next_time(t_last[:-1], d_last[:-1]))  # [P-1]
        # [P] a segment of this write starts here (it may go on from a stored one)
        new = np.ones(len(s), dtype=bool)
        np.logical_not(joins, out=new[1:])
        after = np.zeros_like(m)  # [P] rows of the piece's segment written after it
        newly = np.empty(0, dtype=np.int64)  # positions that become window starts
        if joins.any():  # segments that run through several pieces (a burst)
            cum = np.cumsum(m)
            ends = np.ones(len(s), dtype=bool)
            ends[:-1] = new[1:]
            after = cum[ends][np.cumsum(new) - 1] - cum
            # rows without S-1 successors in their piece that have them in the segment
            lo = np.maximum(m - S1, 0)
            count = np.maximum(np.minimum(m, m - S1 + after) - lo, 0)  # [P]
            newly = np.repeat(g_first + lo - (np.cumsum(count) - count), count) + np.arange(count.sum())
        heads = np.flatnonzero(head)  # each stream's first and last piece
        lasts = np.append(heads[1:], len(s)) - 1
        seg_first = np.flatnonzero(new)[np.cumsum(new) - 1]  # [P] the first piece of each piece's segment
        links, stored_valid = self._update_streams(order, heads, lasts, seg_first, s, m, t0, g_first, after,
                                                   t_last, d_last)
        g_last = g_first + m - 1
        src = np.concatenate([g_last[:-1][joins], np.array(links[0::2], dtype=np.int64)])
        dst = np.concatenate([g_first[1:][joins], np.array(links[1::2], dtype=np.int64)])
        newly = np.concatenate([newly, np.array(stored_valid, dtype=np.int64)])
        C = self.capacity
        self._next_np[src % C] = dst % C
        self._valid_np[newly % C] = True
        self._n_valid += len(newly)

    def _update_streams(self, order, heads, lasts, seg_first, s, m, t0, g_first, after, t_last, d_last):
        """Each written stream's state after this write. The arrays are over the pieces sorted
        by stream (``order``; write order within a stream); ``heads``/``lasts``: each stream's
        first/last piece; ``seg_first``: the first piece of each piece's segment. Returns the
        links from stored segments (source, destination, ... positions) and the stored tail
        rows that became window starts."""
        S1, oldest = self.seq_len - 1, self._written - self.capacity
        s, m, t0, g_first, after, t_last, d_last, seg_first = (
            x.tolist() for x in (s, m, t0, g_first, after, t_last, d_last, seg_first))
        links, valid, fresh = [], [], []
        for h, k in zip(heads.tolist(), lasts.tolist()):
            st = self._streams.get(s[h])
            prefix: list[int] = []  # the stored tail this write's first segment continues
            if st is not None and st.last_g >= oldest and t0[h] == next_time(st.last_time, st.last_done):
                links += (st.last_g, g_first[h])
                prefix = st.tail
                if prefix and prefix[0] < oldest:  # ascending: filter only when some are gone
                    prefix = [g for g in prefix if g >= oldest]
                # the stored tail rows with S-1 successors once its segment goes on
                valid += prefix[: max(0, len(prefix) + after[h] + m[h] - S1)]
            first = seg_first[k]  # of the stream's last segment
            tail = _last_positions(g_first, m, first, k, S1, prefix if first == h else [])
            state = _Stream(t_last[k], d_last[k], g_first[k] + m[k] - 1, tail)
            if st is None:  # new streams join the dict in the order they first appear in the write
                fresh.append((int(order[h]), s[h], state))
            else:
                self._streams[s[h]] = state
        for _, stream, state in sorted(fresh):
            self._streams[stream] = state
        return links, valid

    def add(self, index) -> None:
        self.extend(torch.as_tensor(index).reshape(1))

    # -------------------------------------------------------------- sampling

    @property
    def num_streams(self) -> int:
        """Streams with records still present (pruned once per capacity written)."""
        return len(self._streams)

    @property
    def num_windows(self) -> int:
        """Window starts present for the current ``seq_len``."""
        return self._n_valid

    def starts(self) -> torch.Tensor:
        """Every valid window start (slots), in slot order."""
        return self._valid.nonzero().squeeze(1)

    def sample(self, storage, batch_size: int) -> tuple[torch.Tensor, dict]:
        S = self.seq_len
        if batch_size % S:
            raise ValueError(f"batch_size {batch_size} is not a multiple of seq_len {S}")
        starts = self.sample_starts(batch_size // S)
        return self.window_index(starts).reshape(-1), {}  # [B * S]

    def sample_starts(self, num: int) -> torch.Tensor:
        """``num`` window starts (slots), uniform over the valid ones, with replacement.

        Drawn with ``self.generator``: the ReplayBuffer's (``ReplayBuffer(generator=...)``,
        ``set_rng``), so saving and restoring the buffer's generator resumes the draws."""
        stored = min(self._written, self.capacity)
        if self._n_valid == 0:
            raise NoWindowError(f"no window of {self.seq_len} consecutive records of one stream yet "
                                f"({stored} steps stored)")
        frac = self._n_valid / stored
        if frac < 0.25:  # sparse: draw from the explicit list of starts
            pool = self._valid[:stored].nonzero().squeeze(1)
            return pool[torch.randint(len(pool), (num,), generator=self.generator)]
        # dense (the usual case): rejection sampling, exactly uniform over valid starts
        out, need = [], num
        while need > 0:
            cand = torch.randint(stored, (int(need / frac * 1.2) + 16,), generator=self.generator)
            cand = cand[self._valid.index_select(0, cand)][:need]
            out.append(cand)
            need -= len(cand)
        return torch.cat(out)

    def window_index(self, starts: torch.Tensor) -> torch.Tensor:
        """Storage slots of the windows starting at ``starts``: ``[B, S]``."""
        cols, cur = [starts], starts
        for _ in range(self.seq_len - 1):
            cur = self._next.index_select(0, cur).long()
            cols.append(cur)
        return torch.stack(cols, 1)  # [B, S]

    def set_seq_len(self, seq_len: int) -> None:
        """Re-index for windows of ``seq_len`` (O(seq_len x capacity), once per change)."""
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if seq_len == self.seq_len:
            return
        self.seq_len = seq_len
        C, w = self.capacity, self._written
        ok = torch.zeros(C, dtype=torch.bool)
        ok[: min(w, C)] = True
        cur = torch.arange(C)
        for _ in range(seq_len - 1):
            nxt = self._next[cur].long()
            ok &= nxt >= 0
            cur = nxt.clamp_min(0)
        self._set_index(ok, self._next)
        self._n_valid = int(ok.sum())
        linked = (self._next >= 0).nonzero().squeeze(1)
        prev = torch.full((C,), -1, dtype=torch.int32)
        prev[self._next[linked].long()] = linked.to(torch.int32)
        for st in self._streams.values():
            slots = [st.last_g % C] if st.last_g >= w - C and seq_len > 1 else []
            while slots and len(slots) < seq_len - 1 and int(prev[slots[-1]]) >= 0:
                slots.append(int(prev[slots[-1]]))
            st.tail = [w - 1 - ((w - 1 - x) % C) for x in reversed(slots)]  # slot -> global position

    # ----------------------------------------------------------------- state

    @property
    def nbytes(self) -> int:
        """Per-slot index bytes (the per-stream state is a few dozen bytes a stream)."""
        return self._valid.numel() * self._valid.element_size() + self._next.numel() * self._next.element_size()

    def state_dict(self) -> dict:
        return {
            "capacity": self.capacity,
            "seq_len": self.seq_len,
            "written": self._written,
            "valid": self._valid.clone(),
            "next": self._next.clone(),
            "streams": [[s, st.last_time, st.last_done, st.last_g, list(st.tail)]
                        for s, st in self._streams.items()],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict["capacity"] != self.capacity:
            raise ValueError(f"sampler state is for capacity {state_dict['capacity']}, "
                             f"this buffer has {self.capacity}")
        self.seq_len = int(state_dict["seq_len"])
        self._written = self._pruned_at = int(state_dict["written"])
        self._set_index(state_dict["valid"].clone().to(self.VALID), state_dict["next"].clone().to(self.NEXT))
        self._n_valid = int(self._valid.sum())
        self._streams = {int(s): _Stream(int(t), int(d), int(g), [int(x) for x in tail])
                         for s, t, d, g, tail in state_dict["streams"]}

    def dumps(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path / "sampler.pt")

    def loads(self, path) -> None:
        self.load_state_dict(torch.load(Path(path) / "sampler.pt", weights_only=True))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(seq_len={self.seq_len}, capacity={self.capacity}, "
                f"windows={self._n_valid}, streams={len(self._streams)})")
