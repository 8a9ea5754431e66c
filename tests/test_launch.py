"""`mouse run` (the launcher) and hang-ups: a closed terminal's SIGHUP ends a run cleanly.

Real processes over real TCP; the test waits on the status files the run writes.
"""

from __future__ import annotations

import os
import signal

from mouse.status import read_status
from tests.run_helpers import (  # noqa: F401 (procs: a fixture)
    SMALL, actor_children, alive, cmdline, procs, read_summary, wait_for)

START_S, RUN_S = 120, 180



def status(path) -> dict:
    return read_status(path) or {}


def test_sighup_ends_mouse_run_cleanly(tmp_path, procs):
    """SIGHUP to the launcher (the learner's process) only: it checkpoints, writes its summary
    and tells its actors to stop, as on SIGTERM or Ctrl-C."""
    run_dir = tmp_path / "run"
    run = procs("run", ["run", "--run-dir", run_dir, "--num-actors", 2, *SMALL,
                        "--budget.max-env-steps", 0, "--budget.max-minutes", 3])
    actor_status = [run_dir / f"actor-{i}.status.json" for i in range(2)]
    wait_for(lambda: all(status(p).get("state") == "running" for p in actor_status), START_S,
             "both actors", [run])
    actors = actor_children(run.pid)
    commands = {pid: cmdline(pid) for pid in actors.values()}
    wait_for(lambda: status(run_dir / "status.json").get("updates", 0) > 0, RUN_S, "the first updates", [run])

    os.kill(run.pid, signal.SIGHUP)
    assert run.wait(60) == 0, run.logs()
    wait_for(lambda: status(run_dir / "status.json").get("state") == "finished", 10, "the final status")
    s = read_summary(run_dir)
    assert s["stop_reason"] == f"signal {int(signal.SIGHUP)}" and s["updates"] > 0
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "best.pt").exists()
    assert "Traceback" not in run.err()
    assert not [pid for pid in commands if alive(pid) and cmdline(pid) == commands[pid]]
    for p in actor_status:  # they stopped because the learner said so, not killed by the launcher
        assert status(p)["state"] == "stopped" and status(p)["stop_reason"] == "the learner asked to stop"
