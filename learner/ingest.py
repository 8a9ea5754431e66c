"""The learner's ingest thread: ZeroMQ → decode/validate → replay, plus actor bookkeeping.

It owns the learner's PULL (records, episode stats) and ROUTER (hello,
heartbeat, bye) sockets. Anything malformed is rejected with a counted reason
(``wire/rejected/<reason>``) and never reaches the buffer; no input can stop
the thread.

Flow control is by credits: an actor may have ``credits`` record chunks in
flight; each chunk the learner stores earns that actor one credit back (an
``ack``), unless the learner is too far behind its replay ratio, in which case
the credit is owed and paid once training catches up. Memory and policy lag
stay bounded by credits × chunk size per actor, whatever the kernel buffers.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field

import zmq

from mouse import wire
from mouse.records import RecordSpec

log = logging.getLogger("mouse.ingest")


@dataclass
class ActorState:
    actor_id: int
    identity: bytes = b""  # ROUTER identity of its control socket (for acks)
    host: str = ""
    pid: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    steps: int = 0
    version: int = -1  # highest policy version seen in its records
    owed: int = 0  # credits earned while throttled, paid when training catches up
    counters: dict = field(default_factory=dict)


class IngestServer(threading.Thread):
    """Receives from actors until ``stop()``; ``insert(td) -> int`` writes records to replay."""

    def __init__(self, pull: zmq.Socket, router: zmq.Socket, spec: RecordSpec, insert, *,
                 current_version, current_weights, config: dict, credits: int = 4,
                 actor_timeout_s: float = 10.0, may_receive=lambda: True):
        super().__init__(name="mouse-ingest", daemon=True)
        self.pull, self.router, self.spec, self.insert = pull, router, spec, insert
        self.current_version = current_version  # () -> int
        self.current_weights = current_weights  # () -> frames of the newest weights
        self.config = config  # sent to every actor in its welcome
        self.credits = credits
        self.actor_timeout_s = actor_timeout_s
        self.may_receive = may_receive  # () -> bool: False while training lags the replay ratio
        self._stop_event = threading.Event()
        self.stop_actors = False  # when set, every heartbeat is answered with "stop"
        self.lock = threading.Lock()
        self.steps = 0
        self.chunks = 0
        self.rejected: collections.Counter = collections.Counter()
        self.actors: dict[int, ActorState] = {}
        self.streams_seen: set[int] = set()
        self.episodes: collections.deque = collections.deque(maxlen=10_000)
        self.lag_sum, self.lag_count = 0, 0
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        try:
            while not self._stop_event.is_set():
                ready = dict(poller.poll(20))
                if self.router in ready:
                    self._control(self.router.recv_multipart(copy=False))
                if self.pull in ready:
                    for _ in range(16):  # drain a burst, then look at control again
                        try:
                            self._data(self.pull.recv_multipart(zmq.NOBLOCK, copy=False))
                        except zmq.Again:
                            break
                self._pay_owed()
        except BaseException as e:  # surfaced by the learner loop, never silent
            self.error = e
            log.exception("ingest thread failed")

    # --- records ---------------------------------------------------------------------------
    def _reject(self, reason: str, detail: str) -> None:
        with self.lock:
            self.rejected[reason] += 1
            first = self.rejected[reason] == 1
        (log.warning if first else log.debug)("rejected message (%s): %s", reason, detail)

    def _data(self, frames) -> None:
        try:
            msg = wire.decode(frames, self.spec)
        except wire.WireError as e:
            self._reject(e.reason, e.detail)
            if e.actor_id is not None:  # a refused chunk is out of flight too
                self._return_credit(e.actor_id)
            return
        if msg.kind == "chunk":
            self._chunk(msg)
        elif msg.kind == "episode":
            with self.lock:
                self._touch(msg.body["actor_id"])
            self.episodes.extend(msg.body["episodes"])
        else:
            self._reject("bad_kind", f"{msg.kind} message on the records socket")

    def _chunk(self, msg) -> None:
        td, actor_id = msg.records, msg.body["actor_id"]
        try:
            n = self.insert(td)
        except ValueError as e:  # the buffer refused it; nothing was written, nothing is booked
            self._reject("replay_rejected", str(e))
            return self._return_credit(actor_id)
        lag = self.current_version() - td["policy_version"]
        with self.lock:
            self.steps += n
            self.chunks += 1
            self.lag_sum += int(lag.sum())
            self.lag_count += len(lag)
            self.streams_seen.update(td["stream_id"].unique().tolist())
            st = self._touch(actor_id)
            st.steps += n
            st.version = max(st.version, int(td["policy_version"].max()))
            st.owed += 1  # the chunk is out of flight either way: its credit comes back
        self._pay_owed(st)

    def _return_credit(self, actor_id: int) -> None:
        """A known actor's refused chunk is out of flight: its credit comes back (nothing else)."""
        with self.lock:
            st = self.actors.get(actor_id)
            if st is not None:
                st.owed += 1
        if st is not None:
            self._pay_owed(st)

    def _pay_owed(self, only: ActorState | None = None) -> None:
        if not self.may_receive():
            return
        for st in [only] if only is not None else list(self.actors.values()):
            if st.owed and st.identity:
                self._ack(st, st.owed)
                st.owed = 0

    def _ack(self, st: ActorState, credits: int) -> None:
        kind = "stop" if self.stop_actors else "ack"
        body = {"version": self.current_version()}
        if kind == "ack":
            body["credits"] = credits
        self.router.send_multipart([st.identity, *wire.encode_control(kind, body)])

    # --- control ---------------------------------------------------------------------------
    def _touch(self, actor_id: int) -> ActorState:
        st = self.actors.get(actor_id)
        if st is None:
            st = self.actors[actor_id] = ActorState(actor_id)
        st.last_seen = time.monotonic()
        return st

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
        with self.lock:
            st = self._touch(int(body["actor_id"]))
        if kind == "bye":
            log.info("actor %d said bye", st.actor_id)
            st.last_seen = 0.0
            return
        st.counters = dict(body["counters"])
        if not st.identity:  # heartbeats from an actor that joined a previous learner
            st.identity = identity
            st.owed += self.credits
        self._ack(st, 0)

    def _hello(self, identity: bytes, body: dict) -> None:
        """Welcome an actor: its id (assigned when it asks with -1), the run config, credits, weights."""
        with self.lock:
            actor_id = int(body["actor_id"])
            if actor_id < 0:  # a repeated hello (the actor resends until answered) keeps its id
                same = [a.actor_id for a in self.actors.values()
                        if (a.host, a.pid) == (body["host"], body["pid"])]
                actor_id = same[0] if same else max(self.actors, default=-1) + 1
            st = self.actors.get(actor_id)
            if st is not None and st.pid and (st.host, st.pid) != (body["host"], body["pid"]) \
                    and time.monotonic() - st.last_seen < self.actor_timeout_s:
                log.warning("actor id %d is already in use by %s pid %d: its streams will interleave; "
                            "give every actor its own --actor-id", actor_id, st.host, st.pid)
            st = self._touch(actor_id)
            st.identity, st.host, st.pid, st.owed = identity, body["host"], body["pid"], 0
        log.info("actor %d connected from %s (pid %d)", actor_id, st.host, st.pid)
        welcome = {"actor_id": actor_id, "config": self.config, "credits": self.credits}
        self.router.send_multipart([identity, *wire.encode_control("welcome", welcome)])
        self.router.send_multipart([identity, *self.current_weights()], copy=False)

    # --- read by the learner's logging ----------------------------------------------------
    def connected(self) -> int:
        now = time.monotonic()
        return sum(now - a.last_seen < self.actor_timeout_s for a in list(self.actors.values()))

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
