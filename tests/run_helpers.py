"""Real `mouse` processes for the end-to-end and fault tests: start, watch, signal, clean up.

Every process runs in its own session (process group), so a cleanup kills the
whole tree it started (a `mouse run` learner and its actor children) by its id.
stdout and stderr go to files, which the tests poll (a pipe nobody reads would
block the process once full).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from mouse.records import RecordSpec

REPO = Path(__file__).resolve().parents[1]
NUM_ENVS = 2

def small_run_flags(num_envs: int = 2, wandb: str = "disabled") -> tuple[str, ...]:
    """Flags for a small, fast run (tiny model and batches); budgets are added per test."""
    return (
        "--env.num-envs", str(num_envs),
        "--actor.chunk-steps", "8",
        "--learner.warmup-steps", "300",
        "--learner.replay-ratio", "0.05",
        "--learner.publish-every", "2",
        "--learner.log-every-s", "1",
        "--train.batch-size", "8",
        "--train.seq-len", "4",
        "--model.hidden-dim", "32",
        "--eval.every-s", "0",
        "--eval.episodes", "2",
        "--wandb.mode", wandb,
    )


SMALL = small_run_flags(NUM_ENVS)


def mouse_env(log_level: str = "INFO") -> dict:
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "disabled", "MOUSE_LOG": log_level,
           "PYTHONUNBUFFERED": "1"}
    env.pop("WANDB_API_KEY", None)
    return env


class Proc:
    """`python -m mouse ARGS` in its own process group; output in NAME.out / NAME.err.

    ``prefix``: a command that execs the rest in place (so ``pid`` stays the mouse process),
    e.g. ``ip netns exec NS`` to run it in another network namespace."""

    def __init__(self, name: str, args, log_dir: Path, log_level: str = "INFO", prefix=()):
        self.name = name
        self.out_path, self.err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                [*prefix, sys.executable, "-m", "mouse", *map(str, args)], stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, cwd=REPO, env=mouse_env(log_level), start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def logs(self, tail: int = 3000) -> str:
        head = f"--- {self.name} (pid {self.pid}, exit {self.popen.poll()})"
        return f"{head} stdout ---\n{self.out()[-tail:]}\n{head} stderr ---\n{self.err()[-tail:]}"

    def wait(self, timeout: float) -> int:
        """The exit code; on timeout the test fails with the logs (cleanup kills the process)."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout}s\n{self.logs()}") from None

    def exit_code(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_group(self) -> None:
        """SIGKILL this process's group (it and every child it started), then reap it."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def procs(tmp_path):
    """start(name, args) -> Proc; every process group started is SIGKILLed at the end."""
    started = []

    def start(name, args, **kw):
        started.append(Proc(name, args, tmp_path, **kw))
        return started[-1]

    yield start
    for p in started:
        p.kill_group()


def wait_for(cond, timeout: float, what: str, procs=()) -> None:
    """Poll ``cond()`` until true; fail early (with their logs) if one of ``procs`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        for p in procs:
            if p.popen.poll() is not None:
                if cond():
                    return
                raise AssertionError(f"{p.name} exited while waiting for {what}\n{p.logs()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n"
                                 + "\n".join(p.logs() for p in procs))
        time.sleep(0.2)


# --- processes by pid (Linux /proc; no psutil) ----------------------------------------------

def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()  # fields after "pid (comm)": state, ppid, ...


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is not)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except (FileNotFoundError, ProcessLookupError):
        return []


def actor_children(parent: int) -> dict[int, int]:
    """{actor id: pid} of the `python -m mouse actor ... --actor-id N` children of ``parent``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is None or int(st[1]) != parent:
            continue
        cmd = cmdline(int(entry.name))
        if "actor" in cmd and "--actor-id" in cmd:
            found[int(cmd[cmd.index("--actor-id") + 1])] = int(entry.name)
    return found


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# --- records for hand-made chunks ---------------------------------------------------------

def stream_records(spec: RecordSpec, n: int, stream_id: int, seed: int = 0) -> TensorDict:
    """``n`` valid records of one stream that never ends: time 0, 1, ..., n - 1."""
    g = torch.Generator().manual_seed(seed)
    td = spec.empty(n)
    td[spec.obs_key] = torch.randn(td[spec.obs_key].shape, generator=g)
    td["time"] = torch.arange(n)
    td["action"] = torch.randint(0, spec.num_actions, (n,), generator=g)
    td["action"][0] = 0
    td["reward"] = torch.ones(n)
    td["reward"][0] = 0.0
    td["xformed_reward"] = td["reward"].clone()
    td["stream_id"] = torch.full((n,), stream_id)
    return td

