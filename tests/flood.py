"""An attacker process for tests/test_hostile.py: every kind of abuse, as fast as sockets take it.

Only zmq and the standard library: a spawned copy starts in a fraction of a second (the
frames that need mouse or torch to build are made by the test and passed in).
"""

from __future__ import annotations

import os
import time

import zmq


def flood(endpoints: tuple[str, str, str], seconds: float, seed: int, frames: dict, ready) -> None:
    """Send every kind of abuse in turn to a learner's (records, control, weights) endpoints
    for ``seconds`` (never blocking: what the sockets do not take is dropped); ``frames``
    holds the pre-built messages: hello(pid) template parts, forged chunk, huge heartbeat."""
    records, control, weights = endpoints
    ctx = zmq.Context()
    socks = {}
    for name, kind, where in (("push", zmq.PUSH, records), ("push_big", zmq.PUSH, records),
                              ("dealer", zmq.DEALER, control), ("dealer_big", zmq.DEALER, control),
                              ("xsub", zmq.XSUB, weights)):
        s = socks[name] = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 64)
        s.connect(where)
    head, tail = frames["hello"]  # a hello's frame 0 around its pid
    burst = ctx.socket(zmq.DEALER)  # a burst of "new actors" at once (queued whole: no send limit)
    burst.setsockopt(zmq.SNDHWM, 0)
    burst.setsockopt(zmq.LINGER, 0)
    burst.connect(control)
    socks["burst"] = burst
    attacks = [
        ("dealer", lambda i: [head + str(10_000 + seed * 1_000_000 + i).encode() + tail]),  # new "actors"
        ("dealer", lambda i: [frames["huge_heartbeat"]]),
        ("dealer", lambda i: [b"\x00garbage"] * 3),
        ("push", lambda i: frames["forged_chunk"]),
        ("push", lambda i: [b"garbage"]),
        ("xsub", lambda i: [b"\x01" + os.urandom(32)]),  # a new topic every time
        ("push", lambda i: [b""] * 100_000 if i % 50 == 0 else [b"x"]),
        ("dealer", lambda i: [b""] * 10_000 if i % 50 == 0 else [b"y"]),
        ("push_big", lambda i: [b"z" * (2 << 20)] if i % 20 == 0 else [b"z"]),  # over the records limit
        ("dealer_big", lambda i: [b"w" * (1 << 17)] if i % 20 == 0 else [b"w"]),  # over the control limit
    ]
    time.sleep(0.2)  # connections up
    for i in range(2000):
        burst.send(head + str(20_000_000 + seed * 1_000_000 + i).encode() + tail)
    ready.set()
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        i += 1
        for name, make in attacks:
            try:
                socks[name].send_multipart(make(i), zmq.NOBLOCK)
            except zmq.Again:
                pass
    for s in socks.values():
        s.close(0)
    ctx.term()
