"""CurveZMQ: keys, the learner's allow-list, pinned learner keys, and what a refused peer gets.

Real sockets throughout: the learner and its actors run as threads of this process over TCP
on loopback with learner.auth on (``InprocRun`` with a tcp:// address), the attackers are
plain pyzmq sockets sending what a real actor sends, and the command-line cases run
`mouse` processes. Keys are laid out as Kubernetes mounts a Secret (``..data`` symlinks,
0440, owned by another user), the layout the deploy/k8s manifests produce.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
import zmq
import zmq.auth

from mouse import wire
from mouse.cli import main as mouse_main
from mouse.cli import parse_run_config
from mouse.config import LearnerConfig
from mouse.keys import (KEY_FILES, ActorKeys, auth_enabled, create_keys, learner_keys,
                        load_actor_keys, load_learner_keys)
from mouse.launch import InprocRun
from mouse.status import read_status
from mouse.transport import Guard, accept_subscriptions, actor_sockets, free_port_base, learner_sockets
from tests.run_helpers import (  # noqa: F401 (procs: a fixture)
    mouse_env, procs, read_summary, small_run_flags, stream_records, wait_for)

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[1]
NUM_ENVS = 2
WAIT_S = 120  # generous: another job may be using both cores
ATTACKER_ID, ATTACKER_STREAM = 77, 900



# --- keys on disk ---------------------------------------------------------------------------

def test_mouse_keys_creates_the_five_files_privately_and_never_overwrites(tmp_path):
    keys = tmp_path / "keys"
    mouse_main(["keys", str(keys)])
    files = sorted(str(p.relative_to(keys)) for p in keys.rglob("*") if p.is_file())
    assert files == sorted(KEY_FILES)
    for p in [keys, keys / "actors"]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
    for name in KEY_FILES:
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600, name
    # pyzmq's certificate format; the allow-list holds the actors' public key
    learner_pub, learner_sec = zmq.auth.load_certificate(keys / "learner.key_secret")
    actor_pub, actor_sec = zmq.auth.load_certificate(keys / "actor.key_secret")
    assert zmq.auth.load_certificate(keys / "learner.key") == (learner_pub, None)
    assert zmq.auth.load_certificates(keys / "actors") == {actor_pub: True}
    assert learner_sec and actor_sec and learner_pub != actor_pub
    before = {n: (keys / n).read_bytes() for n in KEY_FILES}
    with pytest.raises(SystemExit, match="already holds keys .* pass --force"):
        mouse_main(["keys", str(keys)])
    assert {n: (keys / n).read_bytes() for n in KEY_FILES} == before
    mouse_main(["keys", str(keys), "--force"])
    assert zmq.auth.load_certificate(keys / "learner.key")[0] != learner_pub
    assert zmq.auth.load_certificates(keys / "actors") == {
        zmq.auth.load_certificate(keys / "actor.key")[0]: True}


def secret_mount(root: Path, files: dict[str, Path]) -> Path:
    """Lay out ``files`` ({path in the mount: source}) as the kubelet mounts a Secret's items:
    the files in ..TIMESTAMP/, ..data -> it, each top-level name a symlink through ..data,
    mode 0440 and (when we may) owned by another user."""
    stamp = root / "..2026_11_30_08_00_00.000000001"
    for rel, src in files.items():
        dst = stamp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        dst.chmod(0o440)
        if os.geteuid() == 0:  # (as root we read it anyway: the point is not to refuse it)
            os.chown(dst, 4242, 1000)
    (root / "..data").symlink_to(stamp.name)
    for top in {rel.split("/")[0] for rel in files}:
        (root / top).symlink_to(f"..data/{top}")
    return root


def mounts(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """`mouse keys` output turned into the learner's and the actors' Secret mounts (deploy/k8s)."""
    made = create_keys(tmp_path / f"{name}-made")
    learner = secret_mount(tmp_path / f"{name}-learner-keys", {
        "learner.key": made / "learner.key", "learner.key_secret": made / "learner.key_secret",
        "actors/actor.key": made / "actors" / "actor.key"})
    actor = secret_mount(tmp_path / f"{name}-actor-keys", {
        n: made / n for n in ("learner.key", "actor.key", "actor.key_secret")})
    return learner, actor


def test_keys_load_from_kubernetes_secret_mounts(tmp_path):
    learner_dir, actor_dir = mounts(tmp_path, "k")
    lk, ak = load_learner_keys(learner_dir), load_actor_keys(actor_dir)
    assert ak.learner_public == lk.public
    assert zmq.auth.load_certificates(lk.allow_dir) == {ak.public: True}


def test_missing_or_incomplete_keys_are_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match=r"missing CurveZMQ key file .*learner.key \(create keys"):
        load_actor_keys(tmp_path / "nowhere")
    keys = create_keys(tmp_path / "keys")
    for p in (keys / "actors").iterdir():
        p.unlink()
    with pytest.raises(ValueError, match=r"no actor public keys in .*actors/"):
        load_learner_keys(keys)
    (keys / "actors" / "actor.key").write_text("not a key\n")
    with pytest.raises(ValueError, match=r"bad allow-list .*actors/: No public key found in .*actor.key"):
        load_learner_keys(keys)


@pytest.mark.parametrize("mode, address, on", [
    ("auto", "tcp://127.0.0.1:5555", False),
    ("auto", "tcp://127.8.9.1:5555", False),
    ("auto", "tcp://localhost:5555", False),
    ("auto", "tcp://[::1]:5555", False),
    ("auto", "tcp://0.0.0.0:5555", True),
    ("auto", "tcp://*:5555", True),
    ("auto", "tcp://10.1.2.3:5555", True),
    ("auto", "tcp://node17.cluster:5555", True),
    ("auto", "inproc://mouse-x", False),
    ("on", "tcp://127.0.0.1:5555", True),
    ("on", "inproc://mouse-x", False),
    ("off", "tcp://0.0.0.0:5555", False),
])
def test_when_the_learner_requires_keys(mode, address, on):
    assert auth_enabled(mode, address) is on


def test_learner_makes_its_keys_once_in_the_run_dir(tmp_path):
    assert learner_keys("auto", "", "tcp://127.0.0.1:5555", tmp_path) is None
    assert not (tmp_path / "keys").exists()  # loopback: open, nothing written
    first = learner_keys("auto", "", "tcp://0.0.0.0:5555", tmp_path)
    assert first.dir == tmp_path / "keys" and (tmp_path / "keys" / "actors" / "actor.key").exists()
    assert learner_keys("on", "", "tcp://127.0.0.1:5555", tmp_path) == first  # reused, not remade
    with pytest.raises(ValueError, match="learner.auth='yes'"):  # a JSON config must not open it
        LearnerConfig(auth="yes")


# --- a running learner with auth on -----------------------------------------------------------

def auth_config(run_dir: Path, *flags):
    """Auth on over TCP; no actors of its own (the tests start each one with its keys)."""
    return parse_run_config(["--run-dir", str(run_dir), "--num-actors", "0", *small_run_flags(NUM_ENVS),
                             "--learner.auth", "on", "--budget.max-env-steps", str(10**9),
                             *map(str, flags)])


class Background:
    """``InprocRun(cfg, address=tcp://127.0.0.1:PORT)`` with the learner in a thread."""

    def __init__(self, cfg):
        self.address = f"tcp://127.0.0.1:{free_port_base()}"
        self.run = InprocRun(cfg, address=self.address)
        self.summary, self.error = None, None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        wait_for(lambda: self.ingest is not None or self.error is not None, WAIT_S, "the learner")
        assert self.error is None, self.error

    def _main(self):
        try:
            self.summary = self.run.run()
        except BaseException as e:  # the test fails with it
            self.error = e

    @property
    def ingest(self):
        return self.run.learner.ingest if self.run.learner is not None else None

    def state(self) -> tuple:
        """The learner's public bookkeeping of its peers."""
        ing = self.ingest
        with ing.lock:
            return sorted(ing.actors), sorted(ing.streams_seen), ing.steps

    def result(self, actor_id: int):
        wait_for(lambda: actor_id in self.run.actor_results, WAIT_S, f"actor {actor_id} to end")
        return self.run.actor_results[actor_id]

    def finish(self) -> dict:
        self.run.stop("test done")
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive() and self.error is None, self.error
        return self.summary


@pytest.fixture
def background():
    """start(cfg) -> Background; every learner still running at the end is stopped."""
    runs = []

    def start(cfg) -> Background:
        runs.append(Background(cfg))
        return runs[-1]

    yield start
    for r in runs:
        if r.thread.is_alive():
            r.run.stop("test ended")
            r.thread.join(WAIT_S)


def attack(address: str, keys: ActorKeys | None, spec, seconds: float = 2.0, guess: bool = True) -> list:
    """Every frame a peer with ``keys`` (None: no CurveZMQ) receives while it does what an actor
    does: says hello (again after 3 s unanswered), subscribes to the weights and, once welcomed,
    sends a valid chunk of 16 records with its session token. With ``guess`` it also queues, at
    once, a chunk with a guessed token (PUSH queues before a connection: delivered if a handshake
    ever succeeds). Without ``guess`` (a peer expected in) it waits up to 30 s for the welcome and
    the weights."""
    push, dealer, sub = actor_sockets(zmq.Context.instance(), address, keys=keys)
    hello = wire.encode_control("hello", {"actor_id": ATTACKER_ID, "token": "", "pid": 1, "host": "attacker",
                                          "version": -1})
    if guess:  # NOBLOCK: with no pipe (a handshake failed and is being retried) PUSH would block
        with contextlib.suppress(zmq.Again):
            push.send_multipart(wire.encode_chunk(stream_records(spec, 16, ATTACKER_STREAM), ATTACKER_ID,
                                                  "ab" * 16, 0), zmq.NOBLOCK)
    got, welcomed, said = [], False, -math.inf
    deadline = time.monotonic() + (seconds if guess else 30.0)
    try:
        while time.monotonic() < deadline:
            if not welcomed and time.monotonic() - said > 3.0:
                with contextlib.suppress(zmq.Again):  # no connection (refused): the hello is dropped
                    dealer.send_multipart(hello, zmq.NOBLOCK)
                    said = time.monotonic()
            for sock in (dealer, sub):
                while sock.poll(0):
                    got.append(sock.recv_multipart())
                    if wire.peek_kind(got[-1]) == "welcome" and not welcomed:
                        body = wire.decode_control(got[-1])[1]
                        own = body["actor_id"] * NUM_ENVS  # its first stream
                        push.send_multipart(wire.encode_chunk(stream_records(spec, 16, own),
                                                              body["actor_id"], body["token"], 0))
                        welcomed = True
            if not guess and welcomed and any(wire.is_weights(f) for f in got):
                break
            time.sleep(0.1)
    finally:
        push.close(linger=10_000)  # the welcomed chunk still goes out (the context lives on)
        dealer.close(0)
        sub.close(0)
    return got


def keys_with(learner_public_from: Path, actor_pair_from: Path) -> ActorKeys:
    lp = load_actor_keys(learner_public_from).learner_public
    pub, sec = zmq.auth.load_certificate(actor_pair_from / "actor.key_secret")
    return ActorKeys(actor_pair_from, lp, pub, sec)


def test_an_actor_with_keys_gets_the_weights_broadcast(tmp_path):
    """The weights port speaks CurveZMQ too, and zmq's size limit on what a peer sends it applies
    to the handshake: at 64 bytes (a subscription's worth) no SUB with keys ever connected, so
    such actors only had the weights of their welcome."""
    keys = create_keys(tmp_path / "keys")
    ctx, address = zmq.Context(), f"tcp://127.0.0.1:{free_port_base()}"
    guard = Guard(ctx, load_learner_keys(keys))
    learner = learner_sockets(ctx, address, load_learner_keys(keys))
    actor = actor_sockets(ctx, address, keys=load_actor_keys(keys))
    pub, sub = learner[2], actor[2]
    frames = wire.encode_weights(3, {"w": torch.ones(2)}, incarnation="0" * wire.INCARNATION_HEX)
    got, deadline = None, time.monotonic() + 10  # a loopback handshake takes milliseconds
    try:
        while got is None and time.monotonic() < deadline:
            accept_subscriptions(pub)  # PUB sends to subscribed connections only
            pub.send_multipart(frames)
            got = sub.recv_multipart() if sub.poll(100) else None
    finally:
        for s in (*actor, *learner):
            s.close(0)
        guard.close()
        ctx.term()
    assert got is not None, "no weights reached an actor's SUB socket over CurveZMQ"
    assert wire.decode_weights(got)[0] == 3


def test_only_allowed_actors_get_in(tmp_path, procs, background):
    learner_dir, actor_dir = mounts(tmp_path, "run")
    stranger = create_keys(tmp_path / "stranger")  # a key pair the learner does not know
    unlisted = tmp_path / "unlisted"  # the stranger's pair, pinning the right learner
    unlisted.mkdir()
    for name in ("actor.key", "actor.key_secret"):
        shutil.copy(stranger / name, unlisted / name)  # (with its mode: 0600)
    shutil.copyfile(actor_dir / "learner.key", unlisted / "learner.key")
    run = background(auth_config(tmp_path / "run", "--learner.keys-dir", learner_dir))
    # an actor process without --keys: it must say why, not wait for ever
    no_keys = procs("no-keys", ["actor", "--learner", run.address,
                                "--status-file", tmp_path / "no-keys.json"])
    for i in (0, 1):  # the actors' Secret mount
        run.run.start_actor(i, keys_dir=str(actor_dir))
    wait_for(lambda: run.state()[0] == [0, 1], WAIT_S, "both actors to join")
    spec = run.run.learner.info.spec

    # real actors with the wrong keys, or none, are refused with a reason, as actor_results say
    run.run.start_actor(5, keys_dir=str(unlisted))
    run.run.start_actor(6, keys_dir="")
    # peers sending valid hellos and chunks, without keys, with a key pair the learner does not
    # know, and without the learner's public key (they guessed one), get nothing and leave nothing
    for keys in (None, load_actor_keys(unlisted), keys_with(stranger, actor_dir)):
        assert attack(run.address, keys, spec) == [], keys
    assert isinstance(run.result(5), ValueError) and "refused this actor's key" in str(run.result(5))
    assert isinstance(run.result(6), ValueError) and "requires CurveZMQ keys" in str(run.result(6))
    actors, streams, steps = run.state()
    assert actors == [0, 1] and streams == list(range(2 * NUM_ENVS))
    assert ATTACKER_STREAM not in streams and steps > 0
    assert no_keys.wait(WAIT_S) == 1
    refused = read_status(tmp_path / "no-keys.json")
    assert refused["state"] == "refused" and "pass --keys DIR" in refused["error"], refused
    assert "error: the learner at" in no_keys.err() and "Traceback" not in no_keys.err()
    # as the kubelet's TCP probe does: connect to the control port and close without a handshake
    socket.create_connection(("127.0.0.1", int(run.address.rsplit(":", 1)[1]) + 1)).close()
    # the learner counted the refused handshakes by reason (a few counters, not one per peer)
    wait_for(lambda: {"no_curve", "unknown_key", "bad_handshake", "incomplete"} <= set(
        read_status(tmp_path / "run" / "status.json")["auth_rejected"]), WAIT_S, "auth_rejected")

    # control: the same messages with the actors' keys are welcome (so the attacks above were
    # refused for their keys alone), and a key added to the allow-list is taken while running
    got = attack(run.address, load_actor_keys(actor_dir), spec, guess=False)
    assert any(wire.peek_kind(f) == "welcome" for f in got) and any(wire.is_weights(f) for f in got)
    wait_for(lambda: ATTACKER_ID in run.state()[0], WAIT_S, "the control peer's state")
    assert run.run.learner.guard.allowed() == 1
    shutil.copyfile(stranger / "actor.key", learner_dir / "actors" / "stranger.key")
    wait_for(lambda: run.run.learner.guard.allowed() == 2, WAIT_S, "the allow-list to be re-read")
    run.run.start_actor(8, max_steps=20, keys_dir=str(unlisted))
    assert isinstance(run.result(8), dict), run.result(8)

    s = run.finish()
    assert s["actors_seen"] == [0, 1, 8, ATTACKER_ID] and s["rejected"] == {}
    # every stored step came from an allowed peer: the actors' counters (plus one reset record
    # per stream) and the control peer's one chunk of 16
    made = sum(r["env_steps"] for r in run.run.actor_results.values() if isinstance(r, dict))
    assert s["env_steps"] == made + 3 * NUM_ENVS + 16, (s, run.run.actor_results)


def test_an_actor_never_trusts_an_impostor_learner(tmp_path, background):
    real_actor = create_keys(tmp_path / "real")
    impostor = create_keys(tmp_path / "impostor")
    # the impostor even allows the real actors' key: only the pinned learner key stops them
    shutil.copyfile(real_actor / "actor.key", impostor / "actors" / "real-actor.key")
    run = background(auth_config(tmp_path / "run", "--learner.keys-dir", impostor))
    run.run.start_actor(0, keys_dir=str(real_actor))
    err = run.result(0)
    assert isinstance(err, ValueError) and "not the learner whose public key is" in str(err), err
    assert run.state() == ([], [], 0)
    # control: the same actor key pair, pinning the impostor's public key, would have joined
    assert attack(run.address, keys_with(impostor, real_actor), run.run.learner.info.spec) != []
    run.finish()
    # an impostor without CurveZMQ at all (an open learner) is refused as well
    open_run = background(auth_config(tmp_path / "open", "--learner.auth", "off"))
    open_run.run.start_actor(0, keys_dir=str(real_actor))
    err = open_run.result(0)
    assert isinstance(err, ValueError) and "does not use CurveZMQ" in str(err), err
    assert open_run.state() == ([], [], 0)
    open_run.finish()


# --- the commands ---------------------------------------------------------------------------

def test_actor_with_missing_keys_is_one_clear_line(tmp_path, procs):
    p = procs("actor", ["actor", "--learner", "tcp://127.0.0.1:5555", "--keys", tmp_path / "none"])
    assert p.wait(WAIT_S) == 1
    assert f"error: missing CurveZMQ key file {tmp_path / 'none' / 'learner.key'}" in p.err()
    assert "Traceback" not in p.err()


def test_learner_on_all_interfaces_makes_keys_its_actors_use(tmp_path, procs):
    """`mouse learner --learner.host 0.0.0.0` just works: auth auto is on, keys in RUN_DIR/keys."""
    port, run_dir = free_port_base(), tmp_path / "run"
    learner = procs("learner", ["learner", "--run-dir", run_dir, "--learner.host", "0.0.0.0",
                                "--learner.port", port, *small_run_flags(NUM_ENVS),
                                "--budget.max-env-steps", 1200])
    wait_for(lambda: (read_status(run_dir / "status.json") or {}).get("state") == "running",
             WAIT_S, "the learner", [learner])
    assert (run_dir / "keys" / "actor.key_secret").exists()
    actor = procs("actor", ["actor", "--learner", f"tcp://127.0.0.1:{port}", "--keys", run_dir / "keys"])
    assert learner.wait(WAIT_S * 2) == 0
    assert actor.wait(WAIT_S) == 0
    s = read_summary(run_dir)
    assert s["actors_seen"] == [0] and s["env_steps"] >= 1200


def test_mouse_run_with_auth_on_gives_its_actors_the_keys(tmp_path, procs):
    run_dir = tmp_path / "run"
    p = procs("run", ["run", "--run-dir", run_dir, "--learner.auth", "on", "--learner.port", 0,
                      *small_run_flags(NUM_ENVS), "--budget.max-env-steps", 1500])
    assert p.wait(WAIT_S * 2) == 0
    s = read_summary(run_dir)
    assert s["actors_seen"] == [0, 1] and s["env_steps"] >= 1500
    assert read_status(run_dir / "status.json")["auth_rejected"] == {}
    assert load_learner_keys(run_dir / "keys").public == load_actor_keys(run_dir / "keys").learner_public


def test_slurm_job_scripts_make_keys_and_pass_them(tmp_path):
    """learner.sbatch and actors.sbatch as plain bash, with stand-ins for srun and hostname:
    the learner job makes RUN_DIR/keys and requires them, the actor task joins with --keys.
    (Slurm itself, sbatch and the job dependencies are not here.)"""
    bin_dir, run_dir, port = tmp_path / "bin", tmp_path / "run", free_port_base()
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    (bin_dir / "hostname").write_text("#!/bin/sh\necho 127.0.0.1\n")  # the learner's address
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**mouse_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}", "MOUSE": f"{sys.executable} -m mouse",
           "MOUSE_RUN_DIR": str(run_dir), "MOUSE_PORT": str(port),
           "MOUSE_LEARNER_JOB": "1"}  # no squeue here: the actor task waits for the address
    started = []

    def script(name, *args):
        with open(tmp_path / f"{name}.log", "wb") as out:
            started.append(subprocess.Popen(["bash", ROOT / "deploy" / "slurm" / name, *map(str, args)],
                                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True))
        return started[-1]

    try:
        learner = script("learner.sbatch", *small_run_flags(NUM_ENVS), "--budget.max-env-steps", 1200)
        actor = script("actors.sbatch")
        assert learner.wait(WAIT_S * 2) == 0, (tmp_path / "learner.sbatch.log").read_text()[-3000:]
        assert actor.wait(WAIT_S) == 0, (tmp_path / "actors.sbatch.log").read_text()[-3000:]
    finally:
        for p in started:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert read_summary(run_dir)["actors_seen"] == [0]
    assert stat.S_IMODE((run_dir / "keys").stat().st_mode) == 0o700
    assert read_status(run_dir / "status.json")["auth_rejected"] == {}  # auth was on


# --- the Kubernetes manifests' command lines ---------------------------------------------------

def manifest_args(name: str) -> list[str]:
    doc = yaml.safe_load((ROOT / "deploy" / "k8s" / name).read_text())
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["mouse"]
    return [str(a) for a in container["args"]]


def test_the_commands_accept_every_flag_the_manifests_pass(monkeypatch, capsys):
    """Parse the manifests' args with the real parser; record what the program would be given."""
    import actors.main
    import learner.main

    seen = {}
    monkeypatch.setattr(learner.main, "main", lambda cfg: seen.setdefault("learner", cfg))
    monkeypatch.setattr(actors.main, "main", lambda *a: seen.setdefault("actor", a))
    args = manifest_args("learner-statefulset.yaml")
    # --config names the ConfigMap's file, which is deploy/k8s/run.json
    args[args.index("--config") + 1] = str(ROOT / "deploy" / "k8s" / "run.json")
    mouse_main(args)
    mouse_main(manifest_args("actors-deployment.yaml"))
    cfg = seen["learner"]
    assert (cfg.run_dir, cfg.learner.host, cfg.learner.port) == ("/data/run", "0.0.0.0", 5555)
    assert (cfg.learner.auth, cfg.learner.keys_dir) == ("on", "/keys")
    learner_addr, actor_id, max_steps, status_file, keys, *_deadline_and_run = seen["actor"]
    assert (learner_addr, keys) == ("tcp://mouse-learner:5555", "/keys")
    for manifest in ("learner-statefulset.yaml", "actors-deployment.yaml"):
        sub, *rest = manifest_args(manifest)
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            mouse_main([sub, "--help"])
        text = capsys.readouterr().out
        assert e.value.code == 0
        # (--config FILE is read before the generated parser, which does not list it)
        for flag in (a for a in rest if a.startswith("--") and a != "--config"):
            assert flag in text, f"mouse {sub} --help does not list {flag}"
