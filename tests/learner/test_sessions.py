"""Actor sessions on a fake clock: id allocation, tokens, refusals, re-hellos, rate limit.

(The same rules over real sockets, with the replies an actor sees: test_ingest.py.)
"""

from __future__ import annotations

import pytest

from learner.sessions import Sessions

TIMEOUT = 10.0


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


def sessions(clock, max_actors=4, **kw) -> Sessions:
    return Sessions(max_actors=max_actors, credits=3, timeout_s=TIMEOUT, clock=clock, **kw)


def hello(s: Sessions, actor_id=-1, token="", host="node-a", pid=100, version=-1, identity=b"route-1"):
    return s.hello(identity, {"actor_id": actor_id, "token": token, "host": host, "pid": pid,
                              "version": version})


def test_ids_come_from_the_learner_and_are_bounded(clock):
    s = sessions(clock, max_actors=3)
    ids = [hello(s, pid=p).state.actor_id for p in (1, 2, 3)]
    assert ids == [0, 1, 2]
    full = hello(s, pid=4)
    assert full.action == "refuse" and "no free actor id" in full.reason
    out = hello(s, actor_id=3, pid=5)  # a requested id must be below max_actors
    assert out.action == "refuse" and "outside [0, 3)" in out.reason
    clock.t += TIMEOUT + 1  # every session lapsed: ids are free again, the lowest first
    assert hello(s, pid=6).state.actor_id == 0
    assert len(s.actors) == 3  # never more than max_actors entries


def test_tokens_are_per_session_and_checked(clock):
    s = sessions(clock)
    a, b = hello(s, pid=1).state, hello(s, pid=2).state
    assert len(a.token) == 32 and a.token != b.token
    assert s.check(0, a.token) is a and s.check(1, b.token) is b
    assert s.check(0, b.token) is None  # b's token names b, not a
    assert s.check(1, "") is None and s.check(7, a.token) is None


def test_a_hello_naming_a_live_actor_is_refused_with_who_holds_it(clock):
    s = sessions(clock)
    a = hello(s, actor_id=2, host="node-a", pid=1).state
    out = hello(s, actor_id=2, host="node-b", pid=9, identity=b"route-intruder")
    assert out.action == "refuse"
    assert out.reason == ("actor id 2 is in use by node-a:1; give every actor its own --actor-id or let "
                          "the learner assign one")
    assert (a.identity, a.host, a.pid) == (b"route-1", "node-a", 1)  # nothing of a's changed
    out = hello(s, actor_id=2, token="f" * 32, host="node-b", pid=9)  # a guessed token changes nothing
    assert out.action == "refuse"
    # once a has lapsed, the id may go to another actor: a's token stops working
    old_token = a.token
    clock.t += TIMEOUT + 1
    c = hello(s, actor_id=2, host="node-b", pid=9).state
    assert s.check(2, c.token) is c and s.check(2, old_token) is None
    assert (c.host, c.pid) == ("node-b", 9)


def test_repeated_hellos_keep_the_session_its_grant_and_what_it_is_owed(clock):
    s = sessions(clock)
    first = hello(s, pid=1)
    a, token = first.state, first.state.token
    a.granted, a.owed = 10, 2  # chunks stored meanwhile
    again = hello(s, pid=1, identity=b"route-2")  # resent before it was answered: same host and pid
    assert again.state is a and a.token == token and (a.granted, a.owed) == (10, 2)
    assert (first.again, again.again) == (False, True)
    assert a.identity == b"route-2"
    s.heard(a)  # a message with its token: from now on only the token names it
    with_token = hello(s, actor_id=0, token=token, identity=b"route-3")  # e.g. after learner silence
    assert with_token.state is a and (a.granted, a.owed, a.identity) == (10, 2, b"route-3") and with_token.again
    stale = hello(s, pid=1)  # no token, same host and pid: a duplicate (or a process reusing the pid)
    assert stale.action == "drop" and stale.reason == "duplicate_hello" and a.identity == b"route-3"


def test_route_refreshes_only_through_the_token(clock):
    s = sessions(clock)
    a = hello(s, pid=1).state
    s.heard(a, b"reconnected")
    assert a.identity == b"reconnected" and a.used


def test_bye_frees_the_id_but_late_records_still_count(clock):
    s = sessions(clock)
    a = hello(s, actor_id=1, pid=1).state
    a_token = a.token
    a.ended = True  # said bye
    assert s.check(1, a_token) is a and s.connected() == 0
    b = hello(s, actor_id=1, pid=2).state
    assert s.check(1, b.token) is b and s.check(1, a_token) is None


def test_connected_counts_live_sessions_and_those_heard_lately(clock):
    s = sessions(clock)
    talking, killed, done = hello(s, pid=1).state, hello(s, pid=2).state, hello(s, pid=3).state
    done.ended = True  # said bye
    assert s.connected() == 2
    clock.t += 4.0  # one goes silent (killed): still live, no longer heard lately
    s.heard(talking)
    assert s.connected() == 2 and s.connected(heard_since=clock.t - 3.0) == 1
    clock.t += TIMEOUT
    assert s.connected() == 0  # both lapsed


def test_hellos_are_rate_limited(clock):
    s = sessions(clock, max_actors=1000, hello_rate=10.0, hello_burst=5)
    outcomes = [hello(s, pid=p).action for p in range(8)]
    assert outcomes == ["welcome"] * 5 + ["drop"] * 3
    assert hello(s, pid=99).reason == "hello_rate"
    clock.t += 0.1  # one more token
    assert [hello(s, pid=p).action for p in (200, 201)] == ["welcome", "drop"]
