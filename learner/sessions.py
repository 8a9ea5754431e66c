"""Actor sessions: who may say what to the learner (the ingest thread's bookkeeping, no sockets).

An actor joins with a hello and gets a *session*: an actor id, a random token and a
credit grant. Every later message names the id and carries the token; ``check``
refuses any other combination, so a header can neither name another actor, nor
gain it credits, nor take over its reply route. The rules:

- Ids come from the learner: a hello asking for one (-1) gets the lowest id in
  ``[0, max_actors)`` without a live session; a requested id must lie in that range.
- A hello naming a live session's id is that actor again when it carries the
  session's token, or, before the session was used (no message with its token yet),
  the same host and pid (the actor resends its hello until answered). It keeps its
  token, grant and what it is owed. Anyone else is refused with a reason, never given
  the id; a hello with no valid token from the same host and pid as a live, used
  session is dropped (a restarted process on a reused pid waits until that session
  lapses).
- A session is live while heard from within ``timeout_s`` and not ended by a bye.
  Records that arrive after a bye are still its own: the token stays valid until a
  new session takes the id.
- Hellos are rate limited (token bucket: each accepted one costs the learner a welcome
  and a copy of the weights).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from mouse.wire import TOKEN_HEX

HELLO_RATE = 100.0  # hellos per second, sustained
HELLO_BURST = 256  # ... and at once (a fleet re-joining a restarted learner)


@dataclass
class ActorState:
    actor_id: int
    token: str = ""  # the current session's token ("" = none yet)
    identity: bytes = b""  # ROUTER identity of its control socket: where replies go
    host: str = ""
    pid: int = 0
    last_seen: float = 0.0
    used: bool = False  # a message carrying the token arrived (the host+pid match ends)
    ended: bool = False  # said bye
    steps: int = 0
    episodes: int = 0  # the episodes its stored chunks ended
    version: int = -1  # highest policy version seen in its records
    granted: int = 0  # credits granted to the session so far (acks carry the total)
    owed: int = 0  # credits earned while throttled, paid when training catches up
    received: int = 0  # the session's chunks taken so far, in seq order (acks carry it)
    counters: dict = field(default_factory=dict)  # its last heartbeat's (wire.HEARTBEAT_COUNTERS)


@dataclass(frozen=True)
class Hello:
    """What to do with a hello: ``welcome`` (``state``; ``again``: a live session's actor
    greeting again), ``refuse`` (tell ``reason``), or ``drop`` (say nothing; ``reason`` is the
    counted rejection)."""

    action: str
    state: ActorState | None = None
    reason: str = ""
    again: bool = False


class Sessions:
    def __init__(self, *, max_actors: int, credits: int, timeout_s: float, clock=time.monotonic,
                 hello_rate: float = HELLO_RATE, hello_burst: int = HELLO_BURST):
        self.max_actors, self.credits, self.timeout_s, self.clock = max_actors, credits, timeout_s, clock
        self.actors: dict[int, ActorState] = {}  # at most max_actors: ids are bounded
        self._ids_by_token: dict[str, int] = {}
        self._rate, self._burst = hello_rate, hello_burst
        self._bucket, self._refilled = float(hello_burst), clock()

    # --- lookups ---------------------------------------------------------------------------
    def live(self, st: ActorState) -> bool:
        return not st.ended and self.clock() - st.last_seen < self.timeout_s

    def connected(self, heard_since: float | None = None) -> int:
        """Live sessions (``heard_since``: only those heard from at or after that time, on ``clock``)."""
        return sum(self.live(st) and (heard_since is None or st.last_seen >= heard_since)
                   for st in list(self.actors.values()))

    def check(self, actor_id: int, token: str) -> ActorState | None:
        """The session of ``actor_id`` if ``token`` is its token, else None."""
        st = self.actors.get(actor_id)
        if st is None or not st.token or not hmac.compare_digest(st.token, token):
            return None
        return st

    def heard(self, st: ActorState, identity: bytes | None = None) -> None:
        """A message with ``st``'s token arrived (over the control socket: ``identity`` is its
        route now, so a reconnected control connection keeps working)."""
        st.used = True
        if not st.ended:  # (its last records may come after its bye)
            st.last_seen = self.clock()
        if identity is not None:
            st.identity = identity

    # --- hello -----------------------------------------------------------------------------
    def hello(self, identity: bytes, body: dict) -> Hello:
        if not self._take_token():
            return Hello("drop", reason="hello_rate")
        wanted, token, host, pid = body["actor_id"], body["token"], body["host"], body["pid"]
        if wanted >= self.max_actors:
            return Hello("refuse", reason=f"actor id {wanted} is outside [0, {self.max_actors}) "
                                          "(learner.max_actors); pick a smaller --actor-id or let "
                                          "the learner assign one")
        st = self._same_actor(wanted, token, host, pid)
        if st is not None:
            if st.used and not (token and st.token == token):
                return Hello("drop", reason="duplicate_hello")
            st.identity, st.last_seen, st.ended = identity, self.clock(), False
            return Hello("welcome", st, again=True)
        held = self.actors.get(wanted)
        if held is not None and self.live(held):
            return Hello("refuse", reason=(
                f"actor id {wanted} is in use by {held.host[:64]}:{held.pid}; give every actor its own "
                "--actor-id or let the learner assign one"))
        actor_id = wanted if wanted >= 0 else self._free_id()
        if actor_id is None:
            return Hello("refuse", reason=f"no free actor id: all {self.max_actors} ids have live "
                                          "actors (learner.max_actors)")
        return Hello("welcome", self._start(actor_id, identity, host, pid))

    def _same_actor(self, wanted: int, token: str, host: str, pid: int) -> ActorState | None:
        """The live session this hello comes from: by its token, else by host and pid."""
        actor_id = self._ids_by_token.get(token) if token else None
        if actor_id is not None and wanted in (-1, actor_id):
            return self.actors[actor_id]
        for st in ([self.actors.get(wanted)] if wanted >= 0 else list(self.actors.values())):
            if st is not None and (st.host, st.pid) == (host, pid) and self.live(st):
                return st
        return None

    def _free_id(self) -> int | None:
        return next((i for i in range(self.max_actors)
                     if i not in self.actors or not self.live(self.actors[i])), None)

    def _start(self, actor_id: int, identity: bytes, host: str, pid: int) -> ActorState:
        st = self.actors.get(actor_id)
        if st is None:
            st = self.actors[actor_id] = ActorState(actor_id)
        self._ids_by_token.pop(st.token, None)  # the previous session's records are refused from now on
        st.token = secrets.token_hex(TOKEN_HEX // 2)
        self._ids_by_token[st.token] = actor_id
        st.identity, st.host, st.pid = identity, host, pid
        st.last_seen, st.used, st.ended = self.clock(), False, False
        st.granted, st.owed, st.received, st.counters = self.credits, 0, 0, {}
        return st

    def _take_token(self) -> bool:
        now = self.clock()
        self._bucket = min(self._burst, self._bucket + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._bucket < 1:
            return False
        self._bucket -= 1
        return True
