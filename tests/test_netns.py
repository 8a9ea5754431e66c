"""Network trouble, for real: the learner and two actors on "two hosts", network namespaces
joined by a veth pair, over TCP with CurveZMQ (the learner binds a non-loopback address).

A 10 s link cut and a reset of every TCP connection must each end with every actor streaming
again within 15 s of the network's return: the same processes (no restart), the same actor
ids and learner session, no rejected message or handshake, and in the end a replay buffer that
holds each stream's records once, in order, from its own actor alone, and all of them.

The link cut is `ip link set DEV down` on the actors' end of the veth for CUT_S seconds. Like a
pulled cable, neither side gets a FIN or an RST: the connections stay open and TCP retransmits
with backoff until the link returns. (tc netem loss 100% would be the other way to drop
everything; this kernel has no netem qdisc, and `ip link` needs nothing beyond iproute2.)
The reset is `ss -K` in the actors' namespace: the kernel aborts each established connection
and sends the learner an RST, as a NAT or firewall dropping its state does (needs a kernel with
CONFIG_INET_DIAG_DESTROY, else the test skips saying so).

Namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN); where `ip netns add` is refused every
test here skips with the reason. The three tests share one learner and its two actors (a module
fixture) and run in file order: the link cut, the reset, then a clean stop and the buffer check
(each also holds alone: the last one then checks a run without faults).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from mouse.config import load_config
from mouse.envs import describe_env
from mouse.keys import create_keys
from mouse.records import next_time
from mouse.replay import make_replay_buffer
from mouse.status import read_status
from tests.run_helpers import Proc, alive, read_summary, small_run_flags, wait_for

pytestmark = pytest.mark.timeout(300)

NUM_ENVS, NUM_ACTORS = 2, 2
CHUNK = NUM_ENVS * 8  # records in a chunk (small_run_flags: --actor.chunk-steps 8)
LEARNER_IP, ACTOR_IP = "10.231.0.1", "10.231.0.2"
PORT = 5555  # the namespaces are new: every port is free in them
CUT_S = 10  # how long the link is down
BACK_S = 15  # the bound: each actor streams again within this after the network is back
START_S = 120  # generous: torch imports slowly when other jobs use both cores
CAPACITY = 1_000_000  # more than a run of this module makes (unthrottled actors): nothing is overwritten


def sh(*cmd) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=30)


class Net:
    """Two new network namespaces, the learner's and the actors', joined by a veth pair.

    Names carry this process's pid, so concurrent runs on one machine do not meet."""

    def __init__(self):
        tag = os.getpid()
        self.learner_ns, self.actor_ns = f"mouse-l-{tag}", f"mouse-a-{tag}"
        self.learner_dev, self.actor_dev = f"ml{tag}", f"ma{tag}"
        self.made: list[str] = []

    def create(self) -> None:
        for ns in (self.learner_ns, self.actor_ns):
            try:
                r = sh("ip", "netns", "add", ns)
            except FileNotFoundError:
                pytest.skip("network namespace tests need iproute2's `ip`, which is not installed")
            if r.returncode:
                pytest.skip(f"`ip netns add` is not permitted here ({r.stderr.strip()}): network "
                            "namespace tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
            self.made.append(ns)
        r = sh("ip", "link", "add", self.learner_dev, "netns", self.learner_ns, "type", "veth",
               "peer", "name", self.actor_dev, "netns", self.actor_ns)
        if r.returncode:
            pytest.skip(f"cannot create a veth pair here: {r.stderr.strip()}")
        for ns, dev, ip in ((self.learner_ns, self.learner_dev, LEARNER_IP),
                            (self.actor_ns, self.actor_dev, ACTOR_IP)):
            self.ip(ns, "addr", "add", f"{ip}/24", "dev", dev)
            self.ip(ns, "link", "set", dev, "up")

    def ip(self, ns: str, *args) -> None:
        r = sh("ip", "-n", ns, *args)
        assert r.returncode == 0, f"ip -n {ns} {' '.join(map(str, args))}: {r.stderr}"

    def exec_in(self, ns: str) -> tuple[str, ...]:
        """A command prefix that runs the rest in ``ns`` (it execs: the pid stays the same)."""
        return ("ip", "netns", "exec", ns)

    def actor_link(self, state: str) -> None:
        self.ip(self.actor_ns, "link", "set", self.actor_dev, state)

    def connections(self) -> set[str]:
        """The actors' established TCP connections to the learner, as their local ADDR:PORT."""
        r = sh(*self.exec_in(self.actor_ns), "ss", "-Htn", "state", "established", "dst", LEARNER_IP)
        assert r.returncode == 0, r.stderr
        return {line.split()[2] for line in r.stdout.splitlines() if line.strip()}

    def reset_connections(self) -> str:
        """Abort every established connection of the actors to the learner (RST to the learner)."""
        r = sh(*self.exec_in(self.actor_ns), "ss", "-K", "-Htn", "state", "established", "dst", LEARNER_IP)
        return r.stdout + r.stderr

    def delete(self) -> None:
        for ns in self.made:  # takes the veth pair with it
            sh("ip", "netns", "del", ns)
        self.made = []


def hwm_mib(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Cluster:
    """The running learner and actors, read through their status files."""

    def __init__(self, net: Net, tmp: Path, keys: Path):
        self.net, self.run_dir = net, tmp / "run"
        self.learner = Proc("learner", [
            "learner", "--run-dir", self.run_dir, "--learner.host", LEARNER_IP, "--learner.port", PORT,
            "--learner.keys-dir", keys, *small_run_flags(NUM_ENVS), "--num-actors", NUM_ACTORS,
            "--learner.max-ahead-steps", 0, "--replay.capacity", CAPACITY, "--learner.save-replay",
            "--budget.max-env-steps", 10**9, "--budget.max-minutes", 5], tmp,
            prefix=net.exec_in(net.learner_ns))
        self.procs = [self.learner]
        wait_for(lambda: self.learner_status().get("state") == "running", START_S,
                 "the learner to run", self.procs)
        self.actor_files = [tmp / f"actor-{i}.status.json" for i in range(NUM_ACTORS)]
        self.actors = [Proc(f"actor-{i}", [
            "actor", "--learner", f"tcp://{LEARNER_IP}:{PORT}", "--actor-id", i, "--keys", keys,
            "--status-file", self.actor_files[i]], tmp, prefix=net.exec_in(net.actor_ns))
            for i in range(NUM_ACTORS)]
        self.procs += self.actors

    def learner_status(self) -> dict:
        return read_status(self.run_dir / "status.json") or {}

    def actor_status(self, i: int) -> dict:
        return read_status(self.actor_files[i]) or {}

    def stored(self) -> dict[str, int]:
        """Records the learner stored, by actor id."""
        return self.learner_status().get("actor_steps", {})

    def wait_streaming(self, timeout: float) -> list[float]:
        """Seconds from now until each actor streams: the learner stored records the actor made
        after now (beyond what it had made by its first status written after now: records that
        were in flight do not count), two chunks of them, and the actor counts two more sent."""
        t0, wall0 = time.monotonic(), time.time()
        base: list[dict | None] = [None] * NUM_ACTORS
        back: list[float | None] = [None] * NUM_ACTORS

        def streaming() -> bool:
            stored = self.stored()
            for i in range(NUM_ACTORS):
                st = self.actor_status(i)
                if base[i] is None and st.get("state") == "running" and st["time"] > wall0:
                    base[i] = st
                if base[i] is not None and back[i] is None \
                        and stored.get(str(i), 0) >= base[i]["env_steps"] + NUM_ENVS + 2 * CHUNK \
                        and st["chunks_sent"] >= base[i]["chunks_sent"] + 2:
                    back[i] = time.monotonic() - t0
            return None not in back

        wait_for(streaming, timeout, f"every actor to stream again (seconds so far: {back})", self.procs)
        return back

    def wait_weights(self, timeout: float) -> None:
        """Broadcast weights reach every actor: its version rises above what it holds now
        (without a re-join, whose welcome would bring weights of its own)."""
        held = [self.actor_status(i)["version"] for i in range(NUM_ACTORS)]
        rejoins = [self.actor_status(i)["rejoins"] for i in range(NUM_ACTORS)]
        wait_for(lambda: all(self.actor_status(i)["version"] > held[i]
                             and self.actor_status(i)["rejoins"] == rejoins[i] for i in range(NUM_ACTORS)),
                 timeout, f"newer weights at every actor (they held {held})", self.procs)

    def identity(self) -> dict:
        """What must not change across a fault: processes, actor ids, the learner session."""
        return {"learner_pid": self.learner_status()["pid"],
                "actors": [(self.actor_status(i)["pid"], self.actor_status(i)["actor_id"],
                            self.actor_status(i)["incarnation"]) for i in range(NUM_ACTORS)]}

    def assert_unharmed(self, before: dict) -> None:
        """No process restarted, no actor changed id or session, nothing rejected, no stranger."""
        assert all(alive(p.pid) for p in self.procs), "\n".join(p.logs() for p in self.procs)
        assert self.identity() == before
        assert before["learner_pid"] == self.learner.pid
        assert [pid for pid, _, _ in before["actors"]] == [p.pid for p in self.actors]
        ls = self.learner_status()
        assert ls["state"] == "running" and ls["rejected"] == {} and ls["auth_rejected"] == {}, ls
        assert ls["actors_connected"] == NUM_ACTORS, ls  # each one's session is live again
        assert sorted(ls["actor_steps"]) == [str(i) for i in range(NUM_ACTORS)], ls["actor_steps"]
        assert ls["streams_seen"] == list(range(NUM_ACTORS * NUM_ENVS)), ls["streams_seen"]
        assert all(self.actor_status(i)["state"] == "running" for i in range(NUM_ACTORS))

    def print_memory(self, when: str) -> None:
        peaks = ", ".join(f"{p.name} {hwm_mib(p.pid):.0f}" for p in self.procs if hwm_mib(p.pid))
        print(f"peak RSS (VmHWM, MiB) {when}: {peaks}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("netns")
    net, c = Net(), None
    try:
        net.create()
        c = Cluster(net, tmp, create_keys(tmp / "keys"))
        back = c.wait_streaming(START_S)
        print(f"\nstart: actors streaming after {', '.join(f'{t:.1f}' for t in back)} s")
        yield c
    finally:
        if c is not None:
            for p in c.procs:
                p.kill_group()
        net.delete()


def test_a_10s_link_cut_ends_with_every_actor_streaming_again(cluster):
    before = cluster.identity()
    cluster.net.actor_link("down")
    time.sleep(3)  # what was on the wire has landed and the learner's status shows it
    stored_in_cut = cluster.stored()
    time.sleep(CUT_S - 3)
    # the cut was real: nothing reached the learner for the rest of it
    assert cluster.stored() == stored_in_cut, "records arrived while the link was down"
    assert all(cluster.actor_status(i)["rejoining"] for i in range(NUM_ACTORS)), \
        "an actor did not notice the silent learner"
    cluster.net.actor_link("up")
    back = cluster.wait_streaming(BACK_S)
    for i, t in enumerate(back):
        print(f"link cut {CUT_S} s: actor {i} streams again {t:.1f} s after the link came back")
    cluster.wait_weights(BACK_S)
    cluster.assert_unharmed(before)
    cluster.print_memory("after the link cut")


def test_a_reset_tcp_connection_ends_with_every_actor_streaming_again(cluster):
    before = cluster.identity()
    old = cluster.net.connections()
    assert len(old) == 3 * NUM_ACTORS, old  # records, control and weights of each actor
    said = cluster.net.reset_connections()
    back = cluster.wait_streaming(BACK_S)
    if old & cluster.net.connections() == old:
        pytest.skip(f"`ss -K` closed no connection (a kernel without CONFIG_INET_DIAG_DESTROY?): {said}")
    assert not old & cluster.net.connections(), "a connection outlived the reset"
    for i, t in enumerate(back):
        print(f"TCP reset: actor {i} streams again {t:.1f} s after its connections were reset")
    cluster.wait_weights(BACK_S)
    cluster.assert_unharmed(before)
    cluster.print_memory("after the TCP reset")


def test_nothing_lost_or_mixed_in_the_buffer(cluster):
    """After a clean stop the replay holds every record the actors made, each stream's once and
    in order (consecutive steps), and only the streams of the actor that owns them."""
    c = cluster
    c.print_memory("at the end")
    os.kill(c.learner.pid, signal.SIGTERM)
    assert c.learner.wait(START_S) == 0, c.learner.logs()
    for a in c.actors:
        assert a.wait(30) == 0, a.logs()
    s = read_summary(c.run_dir)
    assert s["actors_seen"] == list(range(NUM_ACTORS)) and s["rejected"] == {}, s
    assert s["streams_seen"] == list(range(NUM_ACTORS * NUM_ENVS)), s
    stored = c.learner_status()["actor_steps"]
    made = {str(i): c.actor_status(i)["env_steps"] for i in range(NUM_ACTORS)}
    print(f"records stored by the learner {stored}; env steps made by the actors {made}")
    resent = [c.actor_status(i)["chunks_resent"] for i in range(NUM_ACTORS)]
    print(f"chunks the actors resent {resent}; skipped by the learner {c.learner_status()['chunks_skipped']}")
    # nothing lost: every step an actor made, plus one reset record per stream
    assert stored == {i: n + NUM_ENVS for i, n in made.items()}, (stored, made)
    # and every episode an actor finished is counted once (they travel in their records' chunks)
    episodes = c.learner_status()["actor_episodes"]
    finished = {str(i): c.actor_status(i)["episodes"] for i in range(NUM_ACTORS)}
    print(f"episodes counted by the learner {episodes}; finished by the actors {finished}")
    assert episodes == finished and all(finished.values()), (episodes, finished)

    cfg = load_config(c.run_dir / "config.json")
    replay = make_replay_buffer(cfg.replay, describe_env(cfg.env).spec, seq_len=cfg.train.seq_len)
    replay.restore(c.run_dir / "replay")
    n = len(replay)
    assert n == s["env_steps"] == sum(stored.values()) < CAPACITY  # all of it is there, in write order
    rows = replay.storage[:n]
    sid, t, done = (rows[k].numpy() for k in ("stream_id", "time", "done"))
    for actor in range(NUM_ACTORS):
        own = (sid // NUM_ENVS) == actor
        assert own.sum() == stored[str(actor)], f"actor {actor}'s records are not all its own"
        for stream in range(actor * NUM_ENVS, (actor + 1) * NUM_ENVS):
            k = sid == stream
            # once and in order: each record is the step after the one before it
            bad = np.flatnonzero(t[k][1:] != next_time(t[k][:-1], done[k][:-1]))
            assert bad.size == 0, f"stream {stream} breaks at its records {bad[:5]}"
    assert set(np.unique(sid)) == set(range(NUM_ACTORS * NUM_ENVS))
