"""ZeroMQ sockets of a run: who binds, who connects, and with which limits.

    actor  PUSH   ──records, episode stats──►  PULL    learner  port P
    actor  DEALER ◄──hello/heartbeat, reply──► ROUTER  learner  port P+1
    actor  SUB    ◄──────weights (vN)────────  XPUB    learner  port P+2

Records use PUSH/PULL; flow control is by credits (see ``learner.ingest``): an
actor sends a chunk only with a credit, and the learner returns one per chunk
stored while training keeps up, so memory and policy lag stay bounded. A new actor says hello on the control
socket and is answered with the current weights at once, so it never waits
for the next broadcast (PUB/SUB drops what was sent before a subscriber joined).

Every learner socket bounds what a peer can make it hold: records and control
messages have a size limit per frame (MAXMSGSIZE: a peer sending more is
disconnected) and short queues per connection; the weights socket honours only
the empty-topic subscription actors send (``accept_subscriptions``) and drops its
connections when peers pile up other topics (``drop_subscribers``), since libzmq
remembers every topic a connected peer subscribed.

The same sockets run over ``inproc://NAME`` (learner and actors as threads of
one process: ``mouse run --inproc`` and most system tests) with the same wire
format and code paths; the three endpoints are then ``inproc://NAME/records``,
``/control`` and ``/weights``.

Over TCP the three sockets can require CurveZMQ (``learner.auth``; keys in ``mouse.keys``):
every connection is then encrypted, the learner's authenticator (ZAP) accepts only actors
whose public key is in its allow-list, and each actor pins the learner's public key, so an
impostor learner is refused too. A refused peer never gets past the handshake: no message
of its reaches the ingest thread, and it receives nothing.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger("mouse.transport")

RECORDS, CONTROL, WEIGHTS = 0, 1, 2
# bounded queues: a slow learner slows the actors rather than growing memory
# safety limits only: credits (learner.ingest) keep far fewer chunks than this in flight
LEARNER_RCVHWM = 32  # per connection; libzmq keeps a multipart message whole, so this bounds memory too
ACTOR_SNDHWM = 64
MAX_MESSAGE_BYTES = 1 << 30  # a peer sending a bigger frame is disconnected by zmq
CONTROL_MAX_BYTES = 1 << 16  # hello, heartbeat, bye: a few hundred bytes
CONTROL_HWM = 16  # control messages queued per connection, each way
# an actor's subscription is 1 byte (the empty topic), but zmq applies the limit to CurveZMQ's
# handshake commands too (HELLO 200 bytes, INITIATE ~290 with its metadata): below that no
# actor of a learner with keys ever gets a weights connection
SUBSCRIPTION_MAX_BYTES = 1024
WEIGHTS_HWM = 4
# a stopping actor waits this many heartbeats at most for the learner to take its last chunks
# before its bye; a stopping learner waits for the byes that long, plus a heartbeat for its
# "stop" to arrive and one to spare
DRAIN_BEATS = 3
# ... but not for an actor it has not heard from for this many heartbeats (killed; its node
# gone): a draining actor still sends its heartbeats
STOP_SILENT_BEATS = 3


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


def learner_sockets(ctx: zmq.Context, address: str, keys=None, records_max_bytes: int = MAX_MESSAGE_BYTES):
    """Bind the learner's PULL, ROUTER and XPUB sockets at ``address``; clear error when taken.

    With ``keys`` (``mouse.keys.LearnerKeys``) all three are CurveZMQ servers. Start the
    ``Guard`` on ``ctx`` first: without an authenticator libzmq lets in every client that
    knows the learner's public key. ``records_max_bytes``: the largest frame a records
    message may have (the learner derives it from its record spec and chunk size).
    """
    ep = endpoints(address)
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, LEARNER_RCVHWM)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 0)
    router.setsockopt(zmq.RCVHWM, CONTROL_HWM)
    router.setsockopt(zmq.SNDHWM, CONTROL_HWM)
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, WEIGHTS_HWM)
    pub.setsockopt(zmq.XPUB_MANUAL, 1)  # subscriptions pass through accept_subscriptions
    pub.setsockopt(zmq.RCVHWM, CONTROL_HWM)
    # refuse absurd messages before buffering them whole (zmq checks each frame)
    for sock, limit in ((pull, records_max_bytes), (router, CONTROL_MAX_BYTES), (pub, SUBSCRIPTION_MAX_BYTES)):
        sock.setsockopt(zmq.MAXMSGSIZE, limit)
    for sock, addr in ((pull, ep.records), (router, ep.control), (pub, ep.weights)):
        sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            sock.curve_secretkey, sock.curve_publickey = keys.secret, keys.public
            sock.curve_server = True
        try:
            sock.bind(addr)
        except zmq.ZMQError as e:
            for s in (pull, router, pub):
                s.close(0)
            raise ValueError(f"learner cannot bind {addr}: {e} (is another learner running on "
                             "this host? give this one other ports: --learner.port, or MOUSE_PORT "
                             "with the Slurm scripts)") from None
    return pull, router, pub


def actor_sockets(ctx: zmq.Context, address: str, send_hwm: int = ACTOR_SNDHWM, keys=None,
                  handshakes: HandshakeWatch | None = None):
    """Connect an actor's PUSH, DEALER and SUB sockets (connecting never waits for the learner).

    With ``keys`` (``mouse.keys.ActorKeys``) they are CurveZMQ clients that complete a
    handshake only with the learner whose public key is ``keys.learner_public``.
    ``handshakes`` watches the DEALER's handshakes from before it connects (a refusal on
    loopback can come at once, and libzmq does not retry it).
    """
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
    if handshakes is not None:
        handshakes.attach(dealer)
    for sock, addr in ((push, ep.records), (dealer, ep.control), (sub, ep.weights)):
        sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            sock.curve_secretkey, sock.curve_publickey = keys.secret, keys.public
            sock.curve_serverkey = keys.learner_public
        sock.connect(addr)
    return push, dealer, sub


# --- CurveZMQ: the learner's authenticator, and refused handshakes on both sides -----------------

_FAILED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | \
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
REFUSALS = {  # the reasons counted in RUN_DIR/status.json's auth_rejected
    "no_curve": "a peer without CurveZMQ keys (an actor started without --keys?)",
    "unknown_key": "a CurveZMQ key that is not in the allow-list",
    "bad_handshake": "a failed CurveZMQ handshake (a peer with another learner public key?)",
    "incomplete": "a connection closed before any handshake (TCP probes, port scans)",
}


def _monitor(sock: zmq.Socket, events: int) -> zmq.Socket:
    """A PAIR socket receiving ``sock``'s ``events``. Its own address: pyzmq's default is named
    after the socket's file descriptor, which a later socket may reuse while the old monitor
    endpoint is still being torn down (its new monitor would then hear nothing)."""
    return sock.get_monitor_socket(events, addr=f"inproc://mouse-monitor-{uuid.uuid4().hex}")


def _refusal(event: dict) -> str | None:
    """The reason of a failed-handshake monitor event (the same names on both sides)."""
    if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "unknown_key"
    if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return "no_curve" if event["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH else "bad_handshake"
    if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return "incomplete"
    return None


class Guard:
    """The learner's gatekeeper: the ZAP authenticator and a count of refused handshakes.

    The authenticator (pyzmq's ThreadAuthenticator on the learner's context) accepts the
    CurveZMQ keys in ``keys.allow_dir`` and re-reads that directory when it changes, so an
    actor key added to a running learner's allow-list is taken within ``reload_s``.
    ``watch(sockets)`` counts refused handshakes by reason (``rejected()``: a few counters,
    however many peers try): the first of a reason is a WARNING, the rest DEBUG, and
    connections closed before a handshake (kubelet TCP probes every 10-20 s) never more than DEBUG.
    """

    def __init__(self, ctx: zmq.Context, keys, reload_s: float = 2.0):
        self.allow_dir, self.reload_s = str(keys.allow_dir), reload_s
        self._rejected: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self.auth = ThreadAuthenticator(ctx, log=logging.getLogger("mouse.zap"))
        self.auth.start()
        self._listing = None
        self._reload()
        self._monitors: list[tuple[zmq.Socket, zmq.Socket, str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _reload(self) -> None:
        """(Re)load the allow-list when its files changed (cheap: a directory listing)."""
        try:
            listing = sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(self.allow_dir)
                             if e.name.endswith(".key"))
        except OSError:
            listing = []
        if listing != self._listing:
            if self._listing is not None:
                log.info("allow-list %s changed: %d actor keys", self.allow_dir, len(listing))
            self._listing = listing
            self.auth.configure_curve(domain="*", location=self.allow_dir)

    def watch(self, named_sockets: dict[str, zmq.Socket]) -> None:
        for name, sock in named_sockets.items():
            self._monitors.append((sock, _monitor(sock, _FAILED), name))
        self._thread = threading.Thread(target=self._run, name="mouse-auth", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        for _, mon, _ in self._monitors:
            poller.register(mon, zmq.POLLIN)
        names = {mon: name for _, mon, name in self._monitors}
        while not self._stop.is_set():
            for mon, _ in poller.poll(int(self.reload_s * 1000)):
                self._count(recv_monitor_message(mon), names[mon])
            self._reload()

    def _count(self, event: dict, port: str) -> None:
        reason = _refusal(event)
        if reason is None:
            return
        with self._lock:
            self._rejected[reason] += 1
            first = self._rejected[reason] == 1 and reason != "incomplete"
        (log.warning if first else log.debug)(
            "refused a handshake on the %s port: %s (refusals are counted in status.json's "
            "auth_rejected; later ones are logged at DEBUG)", port, REFUSALS[reason])

    def allowed(self) -> int:
        """Actor keys in the allow-list as last loaded."""
        return len(self.auth.certs.get("*", {}))

    def rejected(self) -> dict[str, int]:
        """Refused handshakes so far, by reason (a ``REFUSALS`` key)."""
        with self._lock:
            return dict(self._rejected)

    def close(self) -> None:
        """After the watched sockets' last use: close them, then stop the authenticator
        (in this order: a server socket without an authenticator would let in any client)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sock, mon, _ in self._monitors:
            sock.disable_monitor()
            mon.close(0)
            sock.close(0)
        self._monitors = []
        self.auth.stop()


class HandshakeWatch:
    """An actor's view of its handshakes on one socket: is the learner up but refusing us?

    ``refused()`` is the reason (a ``REFUSALS`` key) once the learner said no: at once for
    a key it does not allow or a missing/unexpected CurveZMQ (libzmq does not even retry
    those), after ``give_up_after`` failures in a row otherwise (a learner stopping
    mid-handshake is no refusal). A learner that is down shows no handshake at all.
    ``came_up()`` says when a handshake has succeeded: the moment to say hello.
    """

    DEFINITE = ("unknown_key", "no_curve")

    def __init__(self, give_up_after: int = 3):
        self.give_up_after = give_up_after
        self.sock: zmq.Socket | None = None
        self.mon: zmq.Socket | None = None
        self.failures, self.reason = 0, None
        self.succeeded = False

    def attach(self, sock: zmq.Socket) -> None:
        """Before ``sock`` connects (``actor_sockets(handshakes=...)``): no event is missed."""
        self.sock, self.mon = sock, _monitor(sock, _FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED)

    def refused(self) -> str | None:
        self._take_events()
        if self.reason in self.DEFINITE or self.failures >= self.give_up_after:
            return self.reason
        return None

    def came_up(self) -> bool:
        """Whether a handshake succeeded since the last call: the connection is up only now, so
        a message sent before it was dropped (the DEALER has ZMQ_IMMEDIATE)."""
        self._take_events()
        up, self.succeeded = self.succeeded, False
        return up

    def _take_events(self) -> None:
        while self.mon.poll(0):
            reason = _refusal(recv_monitor_message(self.mon))
            if reason is None:  # a handshake succeeded
                self.failures, self.reason, self.succeeded = 0, None, True
            else:
                self.failures, self.reason = self.failures + 1, reason

    def close(self) -> None:
        if self.sock is not None:
            self.sock.disable_monitor()
            self.mon.close(0)
            self.sock = self.mon = None


# --- the weights socket: only the empty topic ----------------------------------------------------

def accept_subscriptions(pub: zmq.Socket, budget_s: float = 0.005) -> int:
    """Handle what peers sent the learner's XPUB (XPUB_MANUAL) for up to ``budget_s``: the
    empty-topic subscription (what every actor's SUB sends) is honoured, anything else
    ignored. Returns how many messages were ignored (unsubscriptions are not counted)."""
    ignored, deadline = 0, time.monotonic() + budget_s
    while time.monotonic() < deadline:
        try:
            part = pub.recv(zmq.NOBLOCK)  # one frame at a time: a peer's many-frame message costs no list
        except zmq.Again:
            break
        if part == b"\x01":
            pub.setsockopt(zmq.SUBSCRIBE, b"")  # applies to the connection that sent it
        elif part[:1] != b"\x00":
            ignored += 1
    return ignored


def drop_subscribers(pub: zmq.Socket) -> None:
    """Close every connection of the weights socket (unbind, then bind the same endpoint again),
    which frees all they subscribed; actors reconnect and subscribe again by themselves."""
    endpoint = pub.getsockopt(zmq.LAST_ENDPOINT).decode()
    pub.unbind(endpoint)
    for _ in range(200):  # the old listener closes in zmq's I/O thread: the port frees in a moment
        try:
            pub.bind(endpoint)
            return
        except zmq.ZMQError:
            time.sleep(0.01)
    pub.bind(endpoint)  # the error, if it is still taken


class SubscriptionGuard:
    """The learner's weights socket kept bounded: ``poll()`` accepts subscriptions and, once
    peers have sent ``limit`` other messages, drops every connection (``drop_subscribers``)."""

    def __init__(self, pub: zmq.Socket, limit: int = 1024):
        self.pub, self.limit = pub, limit
        self.ignored = 0  # messages other than the empty-topic subscription, in total
        self._since_drop = 0

    def poll(self) -> None:
        n = accept_subscriptions(self.pub)
        self.ignored += n
        self._since_drop += n
        if self._since_drop >= self.limit:
            log.warning("weights socket: %d subscriptions to other topics (only the empty topic is "
                        "served); dropping its connections (actors reconnect by themselves)", self._since_drop)
            drop_subscribers(self.pub)
            self._since_drop = 0


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
