"""The learner's ingest thread: ZeroMQ → decode/validate → replay, plus actor bookkeeping.

It owns the learner's PULL (record chunks and the episodes they end) and ROUTER (hello,
heartbeat, bye) sockets. Anything malformed is rejected with a counted reason
(``wire/rejected/<reason>``) and never reaches the buffer; no input can stop
the thread. Besides the wire's reasons (``mouse.wire``) it counts:

    bad_token        a message whose token is not the session token of the actor id it names
                     (a heartbeat is answered "rejoin": a restarted learner's actors say hello again)
    foreign_streams  records or episodes of streams outside the sender's own range
                     (actor_id * num_envs .. + num_envs - 1)
    hello_refused    a hello for an id out of range or held by another live actor ("stop" + reason)
    hello_rate       a hello over the rate limit (dropped; the actor resends it)
    duplicate_hello  a hello with no valid token from the host and pid of a live, used session
    replay_rejected  the buffer refused a decoded chunk

Who may send what is ``learner.sessions``'s: each message is checked against the
session of the actor id it names. Flow control is by credits: an actor may have
``credits`` record chunks in flight; each chunk the learner stores (or refuses from
a known session) earns that actor one credit back, unless the learner is too far
behind its replay ratio, in which case the credit is owed and paid once training
catches up. Acks carry the session's total grant, so a lost ack costs nothing, and
one ack per actor at the end of each records burst pays every credit its chunks earned.

Delivery. A session's chunks are taken in their ``seq`` order only, and every ack (and
every answer to a heartbeat) says how many were taken (``received``). A chunk a reset
connection lost leaves a gap: what follows it is dropped as ``out_of_order`` until the
actor resends from the gap on; a resent chunk that had arrived after all is dropped as a
``duplicate``. Neither is a rejection (both are counted in ``skipped``) and neither earns a
credit: a chunk earns one once, when taken. So nothing a connection loses is lost, and no
record is stored twice.

Memory and time stay bounded whatever peers send: sessions are at most
``max_actors`` (so remembered streams at most ``max_actors * num_envs``), a
heartbeat's counters are a fixed set of bounded numbers, messages with more frames
than their kind can have are discarded frame by frame a slice at a time, and every
loop round handles a bounded burst of each socket.

Stream continuity: the replay links a stream's records across chunks only when they
are consecutive steps (``mouse.replay.sampler``); anything else starts a new segment
and no window spans the break. So an actor that re-joins (a restarted learner, a
new session) just goes on with its streams: whatever tail a dead learner lost is a
gap the replay already handles, and the ingest keeps no per-stream state to forget.

Stopping (``stop_actors``): every live session is told "stop" at once, and every ack and
answer to a heartbeat after that is one; the learner waits for the actors' byes
(``Learner._stop_actors``). A stopping learner takes no new actor: a hello without a session
token is answered "stop". A hello with a token still gets a session (its own again, or a new
one for an actor of an earlier learner process, which heeds only this one's replies), then
the "stop".
"""

from __future__ import annotations

import collections
import logging
import threading
import time

import numpy as np
import zmq

from mouse import wire
from mouse.records import RecordSpec

from .chunks import Received, check_chunks, own_streams
from .sessions import ActorState, Sessions

log = logging.getLogger("mouse.ingest")

CONTROL_BURST, DATA_BURST = 64, 64  # messages per loop round, each socket
BATCH_BYTES = 64 << 20  # record bytes held back for one storage write at most
MAX_VERSION_JUMP = 1 << 32  # more publishes than any run makes: a report further ahead is a lie
DRAIN_FRAMES = 1024  # frames of an over-long message discarded per loop round (~5 ms)
STOPPING = "the learner is stopping"  # the reason of every "stop" a stopping learner sends
TOO_MANY = object()


class _Refused(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class _Skipped(Exception):
    """A chunk out of its session's order (``reason``: duplicate or out_of_order)."""


class BoundedReceiver:
    """Multipart messages of at most ``max_frames`` frames, received a frame at a time.

    A longer message is reported once (``TOO_MANY``) and then discarded without becoming a
    Python list: ``drain_frames`` frames per call (None: all of it at once). zmq delivers a
    message whole, so nothing behind it on this socket can be read before it is gone:
    slices keep the *other* socket served meanwhile, draining at once serves this one soonest.
    """

    def __init__(self, sock: zmq.Socket, max_frames: int, drain_frames: int | None = DRAIN_FRAMES):
        self.sock, self.max_frames, self.drain_frames = sock, max_frames, drain_frames
        self.skipping = False

    def recv(self):
        """The frames of the next message, ``TOO_MANY``, or None (nothing complete now)."""
        sock = self.sock
        if self.skipping:
            recv, more, n, limit = sock.recv, sock.getsockopt, 0, self.drain_frames or -1
            while n != limit:  # (the tightest loop pyzmq allows: an attacker sets the count)
                recv(zmq.NOBLOCK)  # the rest of a message is there once its first frame is
                n += 1
                if not more(zmq.RCVMORE):
                    self.skipping = False
                    break
            return None
        try:
            frames = [sock.recv(zmq.NOBLOCK, copy=False)]
        except zmq.Again:
            return None
        while frames[-1].more:
            if len(frames) == self.max_frames:
                self.skipping = True
                return TOO_MANY
            frames.append(sock.recv(zmq.NOBLOCK, copy=False))
        return frames


class IngestServer(threading.Thread):
    """Receives from actors until ``stop()``; ``insert(chunks) -> int`` stores checked chunks
    (``StreamReplay.ingest_arrays``: a list of {field: numpy array}, ValueError if refused).

    ``spec`` is the record contract (magnitude bounds included); chunks hold at most
    ``max_records`` records, actor k's streams are ``k * num_envs + j``.
    """

    def __init__(self, pull: zmq.Socket, router: zmq.Socket, spec: RecordSpec, insert, *,
                 current_version, current_weights, incarnation: str, config: dict, num_envs: int,
                 max_records: int = wire.DEFAULT_MAX_RECORDS, credits: int = 4, max_actors: int = 1024,
                 actor_timeout_s: float = 10.0, may_receive=lambda: True, version_window_s: float | None = None):
        super().__init__(name="mouse-ingest", daemon=True)
        self.pull, self.router, self.spec, self.insert = pull, router, spec, insert
        self.current_version = current_version  # () -> int
        self.current_weights = current_weights  # () -> frames of the newest weights
        self.incarnation = incarnation
        self.config = config  # sent to every actor in its welcome
        self.num_envs, self.max_records = num_envs, max_records
        self.may_receive = may_receive  # () -> bool: False while training lags the replay ratio
        self.actor_timeout_s = actor_timeout_s
        self.sessions = Sessions(max_actors=max_actors, credits=credits, timeout_s=actor_timeout_s)
        self.actors: dict[int, ActorState] = self.sessions.actors
        # heartbeats must not wait behind a records flood: records messages are drained in slices,
        # a control message at once (it blocks its own socket until it is gone)
        self._records = BoundedReceiver(pull, 2 + len(spec.fields()))  # a chunk: header, fields, episodes
        self._control_in = BoundedReceiver(router, 2, drain_frames=None)  # the sender's identity + one frame
        self._stop_event = threading.Event()
        self.stop_actors = False  # when set, every live session is told "stop", then every reply is one
        self.told_to_stop = threading.Event()  # set once every live session has been told
        self.lock = threading.Lock()
        self.steps = 0
        self.chunks = 0
        self.rejected: collections.Counter = collections.Counter()
        self.skipped: collections.Counter = collections.Counter()  # duplicate / out_of_order chunks
        self.streams_seen: set[int] = set()  # at most max_actors * num_envs: only own streams count
        self.episodes: collections.deque = collections.deque(maxlen=10_000)
        self.lag_sum, self.lag_count = 0, 0
        self.version_heard = -1  # see _heard_version
        # reports raise version_heard until then (monotonic): while a restarted fleet joins again
        self.versions_heard_until = time.monotonic() + (version_window_s or max(30.0, 3 * actor_timeout_s))
        self.error: BaseException | None = None
        self.listened_at = time.monotonic()  # the loop's last poll: messages up to then are handled
        self._pending: list[Received] = []  # chunks of this burst, stored together (_flush)
        self._pending_bytes = 0
        self._record_bytes = spec.record_nbytes()
        self._admitted: ActorState | None = None  # the session of the chunk being opened (_admit)
        self._earned: dict[int, ActorState] = {}  # sessions whose chunks earned credits this burst

    def stop(self) -> None:
        self._stop_event.set()

    def _heard_version(self, version: int) -> None:
        """A policy version a session reported (hello, heartbeat, records). A resumed learner
        publishes above ``version_heard``, the versions its actors held when it started: they
        report them as they join again. Reports count during the first ``version_window_s`` only,
        each at most MAX_VERSION_JUMP above the learner's own version, so no peer can push the
        versions towards their 2**53 end (where weights could no longer move forward)."""
        if time.monotonic() < self.versions_heard_until:
            self.version_heard = max(self.version_heard, min(version, self.current_version() + MAX_VERSION_JUMP))

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        try:
            while not self._stop_event.is_set():
                self.listened_at = time.monotonic()  # (silence counts only while it listens)
                ready = dict(poller.poll(20))
                if self.router in ready:
                    self._burst(self._control_in, CONTROL_BURST, self._control)
                if self.pull in ready:
                    self._burst(self._records, DATA_BURST, self._data)
                    self._flush()
                self._pay_owed()
                if self.stop_actors and not self.told_to_stop.is_set():
                    self._tell_to_stop()
        except BaseException as e:  # surfaced by the learner loop, never silent
            self.error = e
            log.exception("ingest thread failed")

    def _burst(self, receiver: BoundedReceiver, n: int, handle) -> None:
        """Up to ``n`` messages, or one slice of an over-long message: the other socket's turn
        comes soon whatever this one holds."""
        for _ in range(n):
            frames = receiver.recv()
            if frames is TOO_MANY:
                self._reject("too_many_frames", f"more than {receiver.max_frames} frames in one message")
            elif frames is None:
                return
            else:
                handle(frames)

    def _reject(self, reason: str, detail: str) -> None:
        with self.lock:
            self.rejected[reason] += 1
            first = self.rejected[reason] == 1
        (log.warning if first else log.debug)("rejected message (%s): %s", reason, detail)

    # --- records ---------------------------------------------------------------------------
    def _admit(self, header: dict) -> None:
        st = self.sessions.check(header["actor_id"], header["token"])
        if st is None:
            raise _Refused("bad_token", f"chunk for actor {header['actor_id']} without its session token")
        self._check_seq(st, header["seq"])
        self._admitted = st  # _hold's (wire.open_chunk calls this before it reads any record frame)

    def _check_seq(self, st: ActorState, seq: int) -> None:
        """Raise _Skipped unless ``seq`` is the session's next chunk."""
        if seq != st.received:
            reason = "duplicate" if seq < st.received else "out_of_order"
            with self.lock:
                self.skipped[reason] += 1
                first = self.skipped[reason] == 1
            (log.info if first else log.debug)("actor %d: chunk %d dropped (%s): %d taken so far",
                                               st.actor_id, seq, reason, st.received)
            raise _Skipped(reason)

    def _data(self, frames) -> None:
        try:
            if wire.peek_kind(frames) == "chunk":  # checked frames, records left in them
                header, arrays = wire.open_chunk(frames, self.spec, max_records=self.max_records,
                                                 admit=self._admit)
                return self._hold(header, arrays)
            msg = wire.decode(frames)  # (the reason it is refused)
        except _Refused as e:
            return self._reject(e.reason, e.detail)
        except _Skipped:
            return
        except wire.WireError as e:
            self._reject(e.reason, e.detail)
            st = self.sessions.check(*e.sender[:2]) if e.sender else None
            if st is not None:  # a refused chunk is taken (never resent) and out of flight
                self._take_refused(st, e.sender[2])
            return
        self._reject("bad_kind", f"{msg.kind} message on the records socket")

    def _hold(self, header: dict, arrays: dict) -> None:
        """Keep a chunk for this burst's storage write (sooner when the held bytes add up)."""
        st, n = self._admitted, header["n"]  # the session _admit found for this very header
        st.received += 1  # taken: stored or refused by the burst's checks
        self._pending.append(Received(st, header["actor_id"], n, arrays, header["episodes"]))
        self._pending_bytes += n * self._record_bytes  # (the wire checked every frame's length)
        if self._pending_bytes >= BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        """Check the held chunks (each gets its own verdict), store the good ones with one
        write, book each one in the order they came, then ack each actor once: the total
        grant pays every credit its chunks (stored or refused) earned in this burst."""
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if pending:
            self._store(pending)
        earned, self._earned = self._earned, {}
        for st in earned.values():
            self._pay_owed(st)

    def _store(self, pending: list[Received]) -> None:
        good = []
        for c, verdict in zip(pending, check_chunks(pending, self.spec, self.num_envs)):
            if verdict is None:
                good.append(c)
            else:
                self._reject(*verdict)
                self._return_credit(c.st)
        if not good:
            return
        try:
            self.insert([c.arrays for c in good])
        except ValueError:  # the buffer refused one (nothing was written): find it, store the rest
            good = [c for c in good if self._insert_alone(c)]
        if good:
            self._book(good)

    def _insert_alone(self, c: Received) -> bool:
        try:
            self.insert([c.arrays])
            return True
        except ValueError as e:  # nothing was written, nothing is booked
            self._reject("replay_rejected", str(e))
            self._return_credit(c.st)
            return False

    def _book(self, stored: list[Received]) -> None:
        """Count the stored chunks (in the order they came) and their sessions' credits: the
        policy versions' sums and maxima come from one pass over all of them."""
        versions = np.concatenate([c.arrays["policy_version"] for c in stored])  # [sum n]
        starts = np.cumsum([0] + [c.n for c in stored[:-1]])
        sums, tops = np.add.reduceat(versions, starts).tolist(), np.maximum.reduceat(versions, starts).tolist()
        now, n_all = self.current_version(), len(versions)
        with self.lock:
            self.steps += n_all
            self.chunks += len(stored)
            self.lag_sum += now * n_all - sum(sums)
            self.lag_count += n_all
            for c, top in zip(stored, tops):
                st = c.st
                if not self.streams_seen.issuperset(own_streams(c.actor_id, self.num_envs)):
                    self.streams_seen.update(np.unique(c.arrays["stream_id"]).tolist())
                self.sessions.heard(st)
                st.steps += c.n
                st.episodes += len(c.episodes)
                st.version = max(st.version, top)
                st.owed += 1  # the chunk is out of flight either way: its credit comes back
                self._earned[id(st)] = st
                self.episodes.extend(c.episodes)
            self._heard_version(max(tops))

    def _take_refused(self, st: ActorState, seq: int) -> None:
        """A known session's chunk the wire refused (so never held): taken and paid for when it
        is the next in order, skipped like any other chunk when not."""
        try:
            self._check_seq(st, seq)
        except _Skipped:
            return
        st.received += 1
        self._return_credit(st)

    def _return_credit(self, st: ActorState) -> None:
        """A known session's refused chunk is out of flight: its credit comes back (nothing else),
        with the burst's ack (``_flush``)."""
        with self.lock:
            st.owed += 1
        self._earned[id(st)] = st

    def _pay_owed(self, only: ActorState | None = None) -> None:
        if not self.may_receive():
            return
        for st in [only] if only is not None else list(self.actors.values()):
            if st.owed and st.identity:
                with self.lock:
                    st.granted, st.owed = st.granted + st.owed, 0
                self._ack(st)

    def _tell_to_stop(self) -> None:
        """Once stopping, every live session hears "stop" at once, not at its next heartbeat."""
        for st in list(self.actors.values()):
            if st.identity and self.sessions.live(st):
                self._ack(st)
        self.told_to_stop.set()

    def _ack(self, st: ActorState) -> None:
        if self.stop_actors:
            kind, body = "stop", {"reason": STOPPING, "refused": False}
        else:
            kind, body = "ack", {"credits": st.granted}
        body["received"] = st.received
        self._send(st.identity, kind, {"version": self.current_version(), **body})

    def _send(self, identity: bytes, kind: str, body: dict) -> None:
        if "reason" in body:
            body["reason"] = body["reason"][:wire.MAX_TEXT]
        body["incarnation"] = self.incarnation
        self.router.send_multipart([identity, *wire.encode_control(kind, body)])

    # --- control ---------------------------------------------------------------------------
    def _control(self, frames) -> None:
        identity, rest = bytes(frames[0].buffer), frames[1:]
        try:
            kind, body = wire.decode_control(rest)
        except wire.WireError as e:
            return self._reject(e.reason, e.detail)
        if kind == "hello":
            return self._hello(identity, body)
        if kind not in ("heartbeat", "bye"):
            return self._reject("bad_kind", f"control kind {kind!r} on the control socket")
        st = self.sessions.check(body["actor_id"], body["token"])
        if st is None:
            self._reject("bad_token", f"{kind} for actor {body['actor_id']} without its session token")
            if kind == "heartbeat":  # e.g. an actor of the previous learner process: hello again
                self._send(identity, "rejoin", {"reason": f"no session for actor {body['actor_id']} here"})
            return
        with self.lock:
            self.sessions.heard(st, identity)
            if kind == "bye":
                st.ended, st.last_seen = True, 0.0
            else:
                st.counters = body["counters"]  # a subset of wire.HEARTBEAT_COUNTERS, bounded numbers
                self._heard_version(st.counters.get("version", -1))
        if kind == "bye":
            log.info("actor %d said bye", st.actor_id)
        else:
            self._ack(st)

    def _hello(self, identity: bytes, body: dict) -> None:
        """Welcome an actor (its id, token, the run config, credits, then the weights) or refuse it.
        A stopping learner takes no new actor: a hello without a session token hears "stop"."""
        if self.stop_actors and not body["token"]:
            return self._no_session(identity, STOPPING, refused=False)
        with self.lock:
            verdict = self.sessions.hello(identity, body)
        if verdict.action == "drop":
            return self._reject(verdict.reason, f"hello from {body['host'][:64]}:{body['pid']}")
        if verdict.action == "refuse":
            self._reject("hello_refused", verdict.reason)
            log.warning("refused a hello from %s:%d: %s", body["host"][:64], body["pid"], verdict.reason)
            return self._no_session(identity, verdict.reason, refused=True)
        st = verdict.state
        self._heard_version(body["version"])
        if verdict.again:  # its hello crossed our welcome, or its connection broke: same session
            log.log(logging.INFO if st.used else logging.DEBUG, "actor %d greeted again (same session)",
                    st.actor_id)
        else:
            log.info("actor %d connected from %s (pid %d)", st.actor_id, st.host[:64], st.pid)
        self._send(identity, "welcome", {"actor_id": st.actor_id, "token": st.token, "config": self.config,
                                         "credits": st.granted})
        self.router.send_multipart([identity, *self.current_weights()], copy=False)
        if self.stop_actors:  # its session goes on only to send what it holds and say bye
            self._ack(st)

    def _no_session(self, identity: bytes, reason: str, refused: bool) -> None:
        """A hello answered "stop" (``refused``: this actor may not join; else the learner is stopping)."""
        self._send(identity, "stop", {"version": self.current_version(), "reason": reason, "refused": refused,
                                      "received": 0})

    # --- read by the learner's logging ----------------------------------------------------
    def connected(self, within_s: float | None = None) -> int:
        """Actors heard from lately (``within_s``: only those heard from in the ``within_s``
        seconds before this thread last listened, so a stalled ingest thread makes nobody silent)."""
        heard_since = None if within_s is None else self.listened_at - within_s
        return self.sessions.connected(heard_since)

    def take_episodes(self) -> list[dict]:
        out = []
        while self.episodes:
            out.append(self.episodes.popleft())
        return out

    def take_policy_lag(self) -> float | None:
        with self.lock:
            lag = self.lag_sum / self.lag_count if self.lag_count else None
            self.lag_sum, self.lag_count = 0, 0
        return lag
