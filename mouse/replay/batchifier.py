"""PrefetchBatchifier: ``TensorDict[B, S]`` windows built ahead of time in background threads.

    batchifier = PrefetchBatchifier(replay, batch_size=B, seq_len=S, prefetch=4,
                                    num_workers=2, device=device, pin_memory=None)
    batch = next(batchifier)         # or: for batch in batchifier; batchifier.get(timeout=...)
    batchifier.close()               # or: with PrefetchBatchifier(...) as batchifier

Workers draw windows from the replay (``replay.sample(B, S)``; the replay's lock
makes this safe while ingest keeps writing) and keep up to ``prefetch`` batches
in a queue. While the buffer has no window yet they wait and retry; ``close()``
still stops them. An exception in a worker is re-raised by the consumer's next
``next()``. ``workers_alive`` counts the worker threads still running.

On CUDA each worker gathers the batch straight into pinned memory and copies it
to the device, non-blocking, on its own CUDA stream; the consumer's stream waits
on an event for that copy (a device-side wait), so the train step never blocks
on the host and the host never blocks on the device.
``wait_s`` accumulates the time the consumer spent waiting for a batch.
"""

from __future__ import annotations

import queue
import threading
import time

import torch
from tensordict import TensorDict

from mouse.replay.sampler import NoWindowError


class PrefetchBatchifier:
    """Iterator of ``TensorDict[B, S]`` windows on ``device``, prefetched by ``num_workers`` threads."""

    def __init__(self, buffer, batch_size: int, seq_len: int, prefetch: int = 4, num_workers: int = 2,
                 device: torch.device | str | None = None, pin_memory: bool | None = None,
                 poll_s: float = 0.01):
        if batch_size < 1 or seq_len < 1 or prefetch < 1 or num_workers < 1:
            raise ValueError(f"batch_size, seq_len, prefetch and num_workers must be >= 1, got "
                             f"{batch_size}, {seq_len}, {prefetch}, {num_workers}")
        self.buffer = buffer
        self.batch_size, self.seq_len = batch_size, seq_len
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        pin = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)
        self.pin_memory = pin and torch.cuda.is_available()  # pinning needs a CUDA runtime
        self.poll_s = poll_s
        self.wait_s = 0.0  # consumer time spent waiting in next()
        self.batches = 0
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"mouse-batchifier-{i}", daemon=True)
                         for i in range(num_workers)]
        for t in self._threads:
            t.start()

    # ---------------------------------------------------------------- worker

    def _work(self) -> None:
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        try:
            while not self._stop.is_set():
                try:
                    # [B, S] on the host, gathered straight into pinned memory when pinning
                    batch = self.buffer.sample(self.batch_size, self.seq_len, pin_memory=self.pin_memory)
                except NoWindowError:
                    self._stop.wait(self.poll_s)  # not enough data yet
                    continue
                item = self._to_device(batch, stream)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        pass
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            if self._error is None:
                self._error = e
            self._stop.set()

    def _to_device(self, batch: TensorDict, stream) -> tuple[TensorDict, object]:
        if self.device.type == "cpu":
            return batch, None
        if stream is None:  # another accelerator: plain copy
            return batch.to(self.device, non_blocking=self.pin_memory), None
        with torch.cuda.stream(stream):
            batch = batch.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        return batch, event

    # -------------------------------------------------------------- consumer

    def get(self, timeout: float | None = None) -> TensorDict:
        """The next batch; waits for data. ``TimeoutError`` after ``timeout`` s, ``StopIteration`` once closed."""
        t0 = time.perf_counter()
        deadline = None if timeout is None else t0 + timeout
        try:
            while True:
                if self._error is not None:
                    raise self._error
                if self._closed:
                    raise StopIteration
                try:
                    batch, event = self._queue.get(timeout=0.05)
                    break
                except queue.Empty:
                    if deadline is not None and time.perf_counter() > deadline:
                        raise TimeoutError(f"no batch within {timeout} s "
                                           f"({len(self.buffer)} steps stored)") from None
        finally:
            self.wait_s += time.perf_counter() - t0
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)  # device-side: the host does not block
            for t in batch.values(True, True):
                t.record_stream(current)  # the allocator must not reuse these before the step is done
        self.batches += 1
        return batch

    @property
    def workers_alive(self) -> int:
        """Worker threads still running: 0 once ``close()`` has returned, or after a worker error."""
        return sum(t.is_alive() for t in self._threads)

    def __next__(self) -> TensorDict:
        return self.get()

    def __iter__(self):
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers and drop prefetched batches (idempotent)."""
        self._closed = True
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def __enter__(self) -> "PrefetchBatchifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
