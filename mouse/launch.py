"""`mouse run`: a learner and N actors on this machine, as processes (TCP on loopback)
or as threads of this process (``--inproc``: ``inproc://`` sockets, same wire and code).

With the command (``mouse.cli``) this is the composition root: the only code that
imports both sides of the system (``learner`` and ``actors``).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from mouse.config import RunConfig

log = logging.getLogger("mouse.launch")


def spawn_actor(address: str, actor_id: int, run_dir: Path, keys_dir: str = "") -> subprocess.Popen:
    """`mouse actor` as a child process: log in actor-N.log, status in actor-N.status.json."""
    log_path = run_dir / f"actor-{actor_id}.log"
    cmd = [sys.executable, "-m", "mouse", "actor", "--learner", address, "--actor-id", str(actor_id),
           "--status-file", str(run_dir / f"actor-{actor_id}.status.json")]
    if keys_dir:  # the learner requires CurveZMQ (mouse run --learner.auth on)
        cmd += ["--keys", keys_dir]
    with open(log_path, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def _watch(procs: list[subprocess.Popen], stop: threading.Event) -> None:
    """Report actors that die; the learner keeps going without them."""
    reported = set()
    while not stop.wait(1.0):
        for i, p in enumerate(procs):
            if i not in reported and p.poll() is not None:
                reported.add(i)
                if p.returncode != 0:
                    log.warning("actor %d exited with code %s (see actor-%d.log in the run directory)",
                                i, p.returncode, i)


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_local(cfg: RunConfig) -> dict:
    """The learner in this process, the actors as children; SIGINT, SIGTERM and SIGHUP end the
    run cleanly (checkpoint, summary) and the actors with it."""
    from learner.main import main as learner_main

    if threading.current_thread() is threading.main_thread():
        # until the learner installs its own handlers (it stops cleanly on them), a signal
        # interrupts the start-up, and the finally below still ends the actors started so far
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
    procs: list[subprocess.Popen] = []
    stop = threading.Event()

    def start_actors(address: str, run_dir: Path, keys_dir: str) -> None:
        for i in range(cfg.num_actors):
            procs.append(spawn_actor(address, i, run_dir, keys_dir))
        threading.Thread(target=_watch, args=(procs, stop), daemon=True).start()

    try:
        return learner_main(cfg, on_ready=start_actors)
    finally:
        stop.set()
        deadline = time.monotonic() + 10  # actors stop themselves once the learner says so
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


class InprocRun:
    """A learner in the calling thread and ``num_actors`` actor threads over ``inproc://``.

    ``run()`` returns the learner's summary; ``actor_results`` holds each actor's
    counters (or the exception that ended it). ``stop()`` may be called from any thread.
    ``address`` (``tcp://127.0.0.1:PORT``) puts the same threads on TCP instead, where the
    learner may require CurveZMQ keys (``learner.auth``): its actors then get them.
    """

    def __init__(self, cfg: RunConfig, name: str | None = None, address: str | None = None):
        self.cfg = cfg
        self.address = address or f"inproc://mouse-{name or uuid.uuid4().hex[:12]}"
        self.keys_dir = ""  # the learner's, once it listens
        self.learner = None
        self.actors: list = []
        self.threads: list[threading.Thread] = []
        self.actor_results: dict[int, object] = {}
        self._stopped = threading.Event()

    def start_actor(self, actor_id: int = -1, max_steps: int = 0, keys_dir: str | None = None):
        """One more actor thread joining the learner (ids as for `mouse actor`); returns the thread.

        ``keys_dir``: its --keys (default: the learner's, when it has any).
        """
        from actors.actor import Actor
        from actors.join import LearnerStopping, connect
        from mouse.keys import load_actor_keys

        keys_dir = self.keys_dir if keys_dir is None else keys_dir

        def run():
            try:
                keys = load_actor_keys(keys_dir) if keys_dir else None
                cfg, aid, sockets, weights, welcome = connect(
                    self.address, actor_id, stop=self._stopped.is_set, keys=keys)
                actor = Actor(cfg, aid, sockets, weights, welcome)
                self.actors.append(actor)
                if self._stopped.is_set():
                    actor.stop("the run ended")
                self.actor_results[aid] = actor.run(max_steps)
            except KeyboardInterrupt:  # stopped before the learner answered
                pass
            except LearnerStopping:  # the learner was stopping: it took no new actor
                self.actor_results[actor_id] = {}
            except BaseException as e:  # surfaced to the caller via actor_results
                log.exception("actor thread failed")
                self.actor_results[actor_id] = e

        t = threading.Thread(target=run, name=f"mouse-actor-{actor_id}", daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def stop(self, reason: str = "stop requested") -> None:
        self._stopped.set()
        if self.learner is not None:
            self.learner.request_stop(reason)

    def _on_learner(self, learner) -> None:
        self.learner = learner
        if self._stopped.is_set():
            learner.request_stop()

    def run(self) -> dict:
        from learner.main import main as learner_main

        def start_actors(_address: str, _run_dir: Path, keys_dir: str) -> None:
            self.keys_dir = keys_dir
            for i in range(self.cfg.num_actors):
                self.start_actor(i)

        try:
            return learner_main(self.cfg, on_ready=start_actors, address=self.address,
                                on_learner=self._on_learner)
        finally:
            self._stopped.set()
            for a in list(self.actors):
                a.stop("the run ended")
            for t in self.threads:
                t.join(timeout=10)


def run_inproc(cfg: RunConfig) -> dict:
    return InprocRun(cfg).run()
