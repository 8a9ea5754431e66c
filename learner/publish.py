"""Weight broadcasts that the training loop never waits on.

``publish(version)`` runs on the training thread and only takes a snapshot of
the tensors actors use (``mouse.acting.acting_state``: the target heads stay
home): on CUDA one device-side concatenation per dtype and one ``non_blocking``
copy into fresh pinned host memory, ordered on the stream before the next
optimizer step, so nothing waits; on the CPU one flat copy, which cannot be
avoided: ZeroMQ sends the bytes without copying, so the weights in flight must
not change under the next step. A thread of its own then waits for the copy,
encodes the frames and sends them on the PUB socket, which only it uses from
then on. If snapshots come faster than they are sent, the newest wins (versions
only move forward; actors take the newest anyway).

``frames`` is the newest encoded broadcast: what a new actor gets in its welcome.
"""

from __future__ import annotations

import threading

import torch
import zmq

from mouse import wire
from mouse.acting import acting_state


class WeightsPublisher:
    def __init__(self, model: torch.nn.Module, pub: zmq.Socket, version: int):
        self.model, self.pub = model, pub
        self.frames = wire.encode_weights(version, self._snapshot()[0])
        self.sent = 0  # broadcasts sent
        self.error: BaseException | None = None
        self._pending: tuple | None = None  # (version, tensors, ready event or None)
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="mouse-publish", daemon=True)
        self._thread.start()

    def _snapshot(self) -> tuple[dict[str, torch.Tensor], torch.cuda.Event | None]:
        """Host copies of the acting tensors (views of one flat tensor per dtype) and, on CUDA,
        the event after which they hold the values."""
        state = acting_state(self.model)
        groups: dict[torch.dtype, list[str]] = {}
        for name, t in state.items():
            groups.setdefault(t.dtype, []).append(name)
        on_cuda = any(t.is_cuda for t in state.values())
        out: dict[str, torch.Tensor] = {}
        for dtype, names in groups.items():
            flat = torch.cat([state[n].detach().reshape(-1) for n in names])  # a fresh copy
            if flat.is_cuda:
                host = torch.empty(flat.shape, dtype=dtype, pin_memory=True)
                host.copy_(flat, non_blocking=True)
                flat = host
            offset = 0
            for n in names:
                size = state[n].numel()
                out[n] = flat[offset:offset + size].view(state[n].shape)
                offset += size
        event = None
        if on_cuda:
            event = torch.cuda.Event()
            event.record()
        return {n: out[n] for n in state}, event

    def publish(self, version: int) -> None:
        """Snapshot now (training thread); encoding and sending happen on the publisher's thread."""
        if self.error is not None:
            raise RuntimeError("weights publisher failed") from self.error
        tensors, event = self._snapshot()
        with self._cond:
            self._pending = (version, tensors, event)
            self._cond.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._pending is None and not self._closing:
                        self._cond.wait()
                    if self._pending is None:
                        return
                    (version, tensors, event), self._pending = self._pending, None
                if event is not None:
                    event.synchronize()  # this thread waits for the copy, not training
                frames = wire.encode_weights(version, tensors)
                self.frames = frames
                self.pub.send_multipart(frames, copy=False)
                self.sent += 1
        except BaseException as e:  # raised again by the next publish()
            self.error = e

    def close(self, timeout: float = 5.0) -> None:
        """Send what is pending, then stop the thread (the caller closes the socket after)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
