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
The same thread keeps the PUB socket's subscriptions bounded (``SubscriptionGuard``:
a ZeroMQ socket is used by one thread only) and never sends weights holding NaN
or inf (counted in ``nonfinite``).
"""

from __future__ import annotations

import threading

import torch
import zmq

import logging

from mouse import wire
from mouse.acting import acting_state
from mouse.transport import SubscriptionGuard

log = logging.getLogger("mouse.learner")


class WeightsPublisher:
    def __init__(self, model: torch.nn.Module, pub: zmq.Socket, version: int,
                 incarnation: str = "0" * wire.INCARNATION_HEX):
        self.pub, self.incarnation = pub, incarnation
        # the learner's weights socket is an XPUB that sees subscriptions (a plain PUB sees none)
        self.subscriptions = SubscriptionGuard(pub) if pub.socket_type == zmq.XPUB else None
        self.nonfinite = 0  # snapshots not sent: they held NaN or inf
        # the acting tensors, grouped by dtype, looked up once: they alias the model's parameters,
        # which the learner updates in place (optimizer steps, resuming before this is built)
        state = acting_state(model)
        self.names = list(state)
        groups: dict[torch.dtype, list[str]] = {}
        for name, t in state.items():
            groups.setdefault(t.dtype, []).append(name)
        self._groups = [[(n, state[n].detach()) for n in names] for names in groups.values()]
        self._shapes = {n: t.shape for n, t in state.items()}
        self.frames = wire.encode_weights(version, self._unflatten(*self._snapshot()),
                                          incarnation=incarnation)
        self.sent = 0  # broadcasts sent
        self.error: BaseException | None = None
        self._pending: tuple | None = None  # (version, flat tensors, ready event or None)
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="mouse-publish", daemon=True)
        self._thread.start()

    def _snapshot(self) -> tuple[list[torch.Tensor], torch.cuda.Event | None]:
        """The training thread's part: one flat host copy per dtype and, on CUDA, the event after
        which they hold the values."""
        flats, on_cuda = [], False
        for group in self._groups:
            flat = torch.cat([t.reshape(-1) for _, t in group])  # a fresh copy
            if flat.is_cuda:
                on_cuda = True
                host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
                host.copy_(flat, non_blocking=True)
                flat = host
            flats.append(flat)
        event = None
        if on_cuda:
            event = torch.cuda.Event()
            event.record()
        return flats, event

    def _unflatten(self, flats: list[torch.Tensor], event=None) -> dict[str, torch.Tensor]:
        """Named views of the flat copies, in the model's order (the publisher thread's part)."""
        if event is not None:
            event.synchronize()  # this thread waits for the copy, not training
        out = {}
        for group, flat in zip(self._groups, flats):
            offset = 0
            for name, _ in group:
                shape = self._shapes[name]
                out[name] = flat[offset:offset + shape.numel()].view(shape)
                offset += shape.numel()
        return {n: out[n] for n in self.names}

    def publish(self, version: int) -> None:
        """Snapshot now (training thread); encoding and sending happen on the publisher's thread."""
        if self.error is not None:
            raise RuntimeError("weights publisher failed") from self.error
        flats, event = self._snapshot()
        with self._cond:
            self._pending = (version, flats, event)
            self._cond.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._pending is None and not self._closing:
                        self._cond.wait(0.05)
                        if self.subscriptions is not None:
                            self.subscriptions.poll()
                    if self._pending is None:
                        return
                    (version, flats, event), self._pending = self._pending, None
                state = self._unflatten(flats, event)
                if not all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point()):
                    self.nonfinite += 1
                    (log.error if self.nonfinite == 1 else log.debug)(
                        "weights v%d hold NaN or inf: not published (%d times so far)", version, self.nonfinite)
                    continue
                frames = wire.encode_weights(version, state, incarnation=self.incarnation)
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
