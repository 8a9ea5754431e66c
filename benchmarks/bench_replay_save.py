"""Replay saves: what a periodic checkpoint with ``--learner.save-replay`` costs the training loop.

    python benchmarks/bench_replay_save.py [--sizes 100000 1000000] [--streams 16] [--dir DIR]

For each size, a full buffer of CartPole records (64 bytes) from ``--streams``
streams is saved to ``--dir`` (a fresh directory on the disk to measure):

1. the first save into the directory: every row (the baseline);
2. a save after 1% and after 10% of the capacity in new rows: only those rows
   and the state (sampler index, 5 bytes a slot) are written;
3. the longest wait for the buffer's lock during a save (what ingest waits: the
   rows are copied under it, written after), and a restore.

Each save fsyncs what it writes, as the learner's do. Ratios compare numbers from
this run only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from mouse.records import RecordSpec
from mouse.replay import ReplayConfig, make_replay_buffer

SPEC = RecordSpec("continuous", (4,), 2)  # CartPole
CHUNK = 512  # steps of one stream per ingested chunk


class Streams:
    """Consecutive records of ``n`` never-ending streams, one stream per chunk in turn."""

    def __init__(self, n: int):
        self.n, self.next_stream, self.time = n, 0, [0] * n

    def chunk(self):
        s, t0 = self.next_stream, self.time[self.next_stream]
        self.next_stream, self.time[s] = (s + 1) % self.n, t0 + CHUNK
        td = SPEC.empty(CHUNK)
        td[SPEC.obs_key] = torch.randn(CHUNK, 4)
        td["time"], td["stream_id"] = torch.arange(t0, t0 + CHUNK), torch.full((CHUNK,), s)
        td["action"][1:] = torch.randint(0, 2, (CHUNK - 1,))
        return td


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench(size: int, streams: int, directory: Path) -> None:
    replay, source = make_replay_buffer(ReplayConfig(capacity=size), SPEC), Streams(streams)

    def ingest(steps: int) -> None:
        for _ in range(steps // CHUNK):
            replay.ingest(source.chunk(), checked=True)

    ingest(size)
    full = timed(lambda: replay.save(directory))
    print(f"{size:>9,} rows  first save (all rows)      {full:6.3f} s")
    for frac in (0.01, 0.1):
        ingest(int(size * frac))
        with LockProbe(replay.lock) as probe:
            t = timed(lambda: replay.save(directory))
        print(f"{size:>9,} rows  save after {frac:4.0%} new rows  {t:6.3f} s  ({t / full:.2f}x the first; "
              f"ingest waited at most {probe.longest:.3f} s for the lock)")
    restored = make_replay_buffer(ReplayConfig(capacity=size), SPEC)
    print(f"{size:>9,} rows  restore                    {timed(lambda: restored.restore(directory)):6.3f} s")


class LockProbe(threading.Thread):
    """Takes and releases ``lock`` every millisecond, as ingest would: ``longest`` wait seen."""

    def __init__(self, lock):
        super().__init__(daemon=True)
        self.lock, self.longest, self.done = lock, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.001):
            t = time.perf_counter()
            with self.lock:
                pass
            self.longest = max(self.longest, time.perf_counter() - t)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--dir", type=Path, default=None, help="where to save (default: a temporary directory)")
    a = p.parse_args()
    root = a.dir or Path(tempfile.mkdtemp(prefix="bench-replay-save-"))
    try:
        for size in a.sizes:
            directory = root / f"replay-{size}"
            shutil.rmtree(directory, ignore_errors=True)
            bench(size, a.streams, directory)
    finally:
        if a.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
