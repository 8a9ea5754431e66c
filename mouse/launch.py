"""`mouse run`: a learner in this process and N actor OS processes over TCP on loopback."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

from mouse.config import RunConfig

log = logging.getLogger("mouse.launch")


def spawn_actor(address: str, actor_id: int, log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "actors.main", "--learner", address, "--actor-id", str(actor_id)]
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


def run_local(cfg: RunConfig) -> dict:
    from learner.main import main as learner_main

    procs: list[subprocess.Popen] = []
    stop = threading.Event()

    def start_actors(address: str, run_dir: Path) -> None:
        for i in range(cfg.num_actors):
            procs.append(spawn_actor(address, i, run_dir / f"actor-{i}.log"))
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
