"""ZeroMQ sockets of a run: who binds, who connects, and with which limits.

    actor  PUSH   ──records, episode stats──►  PULL    learner  port P
    actor  DEALER ◄──hello/heartbeat, reply──► ROUTER  learner  port P+1
    actor  SUB    ◄──────weights (vN)────────  PUB     learner  port P+2

Records use PUSH/PULL; flow control is by credits (see ``learner.ingest``): an
actor sends a chunk only with a credit, and the learner returns one per chunk
stored while training keeps up, so memory and policy lag stay bounded. A new actor says hello on the control
socket and is answered with the current weights at once, so it never waits
for the next broadcast (PUB/SUB drops what was sent before a subscriber joined).

The same sockets run over ``inproc://NAME`` (learner and actors as threads of
one process: ``mouse run --inproc`` and most system tests) with the same wire
format and code paths; the three endpoints are then ``inproc://NAME/records``,
``/control`` and ``/weights``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import zmq

RECORDS, CONTROL, WEIGHTS = 0, 1, 2
# bounded queues: a slow learner slows the actors rather than growing memory
# safety limits only: credits (learner.ingest) keep far fewer chunks than this in flight
LEARNER_RCVHWM = 256
ACTOR_SNDHWM = 64
MAX_MESSAGE_BYTES = 1 << 30  # a peer sending more is disconnected by zmq
WEIGHTS_HWM = 4


@dataclass(frozen=True)
class Endpoints:
    records: str
    control: str
    weights: str


def endpoints(address: str) -> Endpoints:
    """'tcp://HOST:PORT' (the records port) or 'inproc://NAME' -> the three endpoints of a learner."""
    m = re.fullmatch(r"inproc://([A-Za-z0-9_.-]+)", address)
    if m:
        return Endpoints(f"{address}/records", f"{address}/control", f"{address}/weights")
    m = re.fullmatch(r"(tcp://[^:/]+|tcp://\[[^\]]+\]):(\d+)", address)
    if not m:
        raise ValueError(f"learner address must look like tcp://HOST:PORT or inproc://NAME, got {address!r}")
    host, port = m.group(1), int(m.group(2))
    return Endpoints(f"{host}:{port}", f"{host}:{port + 1}", f"{host}:{port + 2}")


def learner_sockets(ctx: zmq.Context, address: str):
    """Bind the learner's PULL, ROUTER and PUB sockets at ``address``; clear error when taken."""
    ep = endpoints(address)
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, LEARNER_RCVHWM)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 0)
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, WEIGHTS_HWM)
    for sock in (pull, router):  # refuse absurd messages before buffering them whole
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    for sock, addr in ((pull, ep.records), (router, ep.control), (pub, ep.weights)):
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(addr)
        except zmq.ZMQError as e:
            for s in (pull, router, pub):
                s.close(0)
            raise ValueError(f"learner cannot bind {addr}: {e} (is another learner running? "
                             "pick another --learner.port)") from None
    return pull, router, pub


def actor_sockets(ctx: zmq.Context, address: str, send_hwm: int = ACTOR_SNDHWM):
    """Connect an actor's PUSH, DEALER and SUB sockets (connecting never waits for the learner)."""
    ep = endpoints(address)
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, send_hwm)
    dealer = ctx.socket(zmq.DEALER)
    # queue control messages only on a live connection: hellos and heartbeats sent while the
    # learner is down are dropped (the actor retries) instead of piling up for its return
    dealer.setsockopt(zmq.IMMEDIATE, 1)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, WEIGHTS_HWM)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    for sock, addr in ((push, ep.records), (dealer, ep.control), (sub, ep.weights)):
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(addr)
    return push, dealer, sub


def drain_latest(sock: zmq.Socket):
    """Receive every queued multipart message without blocking; return the newest (or None)."""
    latest = None
    while True:
        try:
            latest = sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return latest


def free_port_base(host: str = "127.0.0.1", tries: int = 50) -> int:
    """A port P with P, P+1 and P+2 all free on ``host`` right now (for local runs and tests)."""
    import random
    import socket

    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(20_000, 60_000)
        socks = []
        try:
            for p in range(base, base + 3):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((host, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no three consecutive free ports found on {host}")
