"""deploy/slurm on a real Slurm: a single-node cluster of Debian's slurmctld, slurmd and munge
that this module starts in a temporary directory (tests/deploy/slurm_cluster.py; installed
with apt-get where missing and possible, skipped with the reason otherwise) and stops again.

The scripts run as an operator runs them, and the test reads what the run writes
(RUN_DIR/status.json, summary.json, the checkpoint, the W&B offline files) and what Slurm
says about the jobs, never console text:

1. launch.sh: a learner job (MOUSE_LEARNER_GRES=none) and an array of 2 actor tasks train;
   a second launch on the live run directory is refused and changes nothing;
2. add-actors.sh mid-run: 3 actors connected, training goes on;
3. the learner process killed outright (a lost node): resume.sh resubmits the learner alone,
   it resumes from the periodic checkpoint, and the running actors join it by themselves;
4. a plain `scancel` of the learner (SIGTERM to every process of the job, W&B's service
   too): the learner still stops cleanly, writes summary.json and finishes its W&B run;
5. resume.sh again, then stop.sh: the job completes with exit code 0, leaving logs, a
   checkpoint, summary.json and a finished W&B run; no job and no learner.address remain.
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

from learner.address import this_host
from learner.wandb_run import WANDB_FLUSH_S
from mouse.status import read_status
from tests.deploy.slurm_cluster import Cluster, ensure_installed
from tests.run_helpers import small_run_flags
from tests.wandb_records import rows, run_files, run_record, summary as wandb_summary, wait_finished

REPO = Path(__file__).resolve().parents[2]
SLURM = REPO / "deploy" / "slurm"
FLAGS = (*small_run_flags(2, wandb="offline"), "--budget.max-env-steps", "0",
         "--budget.max-minutes", "10", "--learner.checkpoint-every-s", "3", "--wandb.actor-metrics")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why_not = ensure_installed()
    if why_not:
        print(f"test_slurm skipped: {why_not}", file=sys.stderr)
        pytest.skip(why_not)
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
        c.env.update({  # what an operator sets (MOUSE: this checkout's code, installed or not)
            "MOUSE": f"{sys.executable} -m mouse", "PYTHONPATH": str(REPO),
            "MOUSE_LEARNER_GRES": "none", "SBATCH_LEARNER_ARGS": "--cpus-per-task=1",
            "MOUSE_CONNECT_TIMEOUT_S": "120", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"})
        for key in ("WANDB_API_KEY", "WANDB_MODE", "MOUSE_PORT"):
            c.env.pop(key, None)
        yield c
    finally:
        c.stop()


def script(cluster: Cluster, name: str, *args, check: bool = True):
    return cluster.sh(SLURM / name, *args, check=check, timeout=700)


def status(run_dir: Path) -> dict:
    return read_status(run_dir / "status.json") or {}


def wait_status(cluster: Cluster, run_dir: Path, cond, what: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = status(run_dir)
        if s and cond(s):
            return s
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-1500:]}"
                             for p in sorted(run_dir.glob("slurm-*.out")))
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; status {s}\n"
                                 f"jobs:\n{cluster.jobs()}\n{logs}")
        time.sleep(0.5)


def wait_job_gone(cluster: Cluster, job: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while cluster.sh("squeue", "-h", "-j", job, "-t", "PD,CF,R,S,CG", check=False).stdout.strip():
        assert time.monotonic() < deadline, f"job {job} still there after {timeout}s:\n{cluster.jobs()}"
        time.sleep(0.5)


def logged_metrics(run_dir: Path) -> set[str]:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {k for line in lines if line.endswith("}") for k in json.loads(line)}


def learner_job(run_dir: Path) -> str:
    return (run_dir / "learner.jobid").read_text().strip()


def wandb_file(wandb_dir: str) -> Path:
    """The .wandb file of a learner's W&B session (summary.json's wandb_dir)."""
    return Path(wandb_dir) / f"run-{wandb_dir.rsplit('-', 1)[1]}.wandb"


def wandb_run_finished(run_dir: Path, wandb_dir: str) -> tuple[dict, int]:
    """The summary of the W&B run of ``wandb_dir`` from the session that finished it (a later
    directory with the same run id when the first session's service was killed), and which."""
    first = wandb_file(wandb_dir)
    sessions = [p for p in run_files(run_dir) if p.name == first.name and p.parent.name >= first.parent.name]
    for i, path in enumerate(sessions):
        if wait_finished(path, timeout=10):
            return wandb_summary(path), i
    raise AssertionError(f"the W&B run of {wandb_dir} was never finished: {sessions}")


class Timer:
    """Prints how long each phase took (pytest -s shows it; a failure shows it too)."""

    def __init__(self):
        self.start = self.last = time.monotonic()

    def __call__(self, what: str, s: dict) -> None:
        now = time.monotonic()
        print(f"[{now - self.start:6.1f}s +{now - self.last:5.1f}s] {what}: actors_connected "
              f"{s.get('actors_connected')}, updates {s.get('updates')}, env_steps {s.get('env_steps')}")
        self.last = now


def test_launch_scale_kill_resume_scancel_stop(cluster, tmp_path):
    run_dir = tmp_path / "cartpole-slurm"
    note = Timer()

    # 1. launch: a learner and 2 actors train
    out = script(cluster, "launch.sh", run_dir, 2, *FLAGS).stdout
    job1 = learner_job(run_dir)
    assert f"learner job {job1}" in out
    s = wait_status(cluster, run_dir, lambda s: s["actors_connected"] == 2 and s["updates"] > 0,
                    "2 actors connected and training")
    note("launched: learner + 2 actors training", s)
    address = (run_dir / "learner.address").read_text().strip()
    assert address.startswith(f"tcp://{this_host()}:") and "0.0.0.0" not in address
    # a second launch on the live run directory is refused and touches nothing
    config = (run_dir / "config.json").read_text()
    again = script(cluster, "launch.sh", run_dir, 1, *FLAGS, check=False)
    assert again.returncode != 0 and "live learner" in again.stderr
    assert learner_job(run_dir) == job1 and (run_dir / "config.json").read_text() == config

    # 2. scale out mid-run: a third actor joins, training goes on
    script(cluster, "add-actors.sh", run_dir, 1)
    s = wait_status(cluster, run_dir, lambda t: t["actors_connected"] == 3 and t["updates"] > s["updates"],
                    "3 actors connected and more updates")
    note("add-actors.sh 1: 3 actors", s)
    actor_jobs = (run_dir / "actors.jobids").read_text().split()
    assert len(actor_jobs) == 2
    # --wandb.actor-metrics: the learner logs each actor's rate (metrics.jsonl: every metric logged)
    wait_status(cluster, run_dir, lambda t: "actors/2/env_steps_per_s" in logged_metrics(run_dir),
                "per-actor metrics of the third actor")
    time.sleep(2 * WANDB_FLUSH_S)  # W&B's service writes its file every WANDB_FLUSH_S: then the kill

    # 3. the learner dies outright (a lost node): no checkpoint at exit, no word to the actors
    wait_status(cluster, run_dir, lambda t: (run_dir / "checkpoint.pt").exists(), "a periodic checkpoint")
    os.kill(s["pid"], signal.SIGKILL)
    wait_job_gone(cluster, job1)
    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    out = script(cluster, "resume.sh", run_dir).stdout
    job2 = learner_job(run_dir)
    assert job2 != job1 and "still running" in out
    s = wait_status(cluster, run_dir, lambda t: t["pid"] != s["pid"] and t["state"] == "running",
                    "the resumed learner")
    assert s["updates"] >= ckpt["updates"] and s["env_steps"] >= ckpt["env_steps"]  # from the checkpoint
    # the actors of before rejoin by themselves: no actor job was added
    s = wait_status(cluster, run_dir, lambda t: t["actors_connected"] == 3 and t["updates"] > ckpt["updates"],
                    "the 3 running actors rejoining the resumed learner")
    note(f"learner SIGKILLed at {ckpt['updates']} checkpointed updates, resume.sh: actors rejoined", s)
    assert (run_dir / "actors.jobids").read_text().split() == actor_jobs

    # 4. a plain scancel: SIGTERM to everything in the job, W&B's service included
    cluster.sh("scancel", job2)
    wait_job_gone(cluster, job2)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "signal 15" and summary["updates"] >= s["updates"]
    finished, session = wandb_run_finished(run_dir, summary["wandb_dir"])
    assert finished["updates"] == summary["updates"] and finished["stop_reason"] == "signal 15"
    for job in actor_jobs:  # told to stop by the learner, the actors ended
        wait_job_gone(cluster, job)
    note(f"plain scancel: summary.json, W&B run finished by session {session}", summary)

    # 5. resume (the learner alone: no actors are running), then the clean stop
    out = script(cluster, "resume.sh", run_dir).stdout
    job3 = learner_job(run_dir)
    assert "no actor jobs running" in out
    s = wait_status(cluster, run_dir, lambda t: t["state"] == "running" and t["updates"] >= summary["updates"],
                    "the learner resumed a second time")
    stopped = script(cluster, "stop.sh", run_dir)
    assert "stopped" in stopped.stdout, stopped.stderr
    note("resume.sh (learner alone), then stop.sh: job COMPLETED", status(run_dir))
    assert cluster.job_field(job3, "JobState") == "COMPLETED" and cluster.job_field(job3, "ExitCode") == "0:0"
    assert not cluster.jobs().strip() and not (run_dir / "learner.address").exists()
    final = json.loads((run_dir / "summary.json").read_text())
    assert final["stop_reason"] == "signal 15" and final["updates"] >= summary["updates"]
    assert torch.load(run_dir / "checkpoint.pt", map_location="cpu",
                      weights_only=True)["updates"] == final["updates"]
    assert "mouse run finished" in (run_dir / f"slurm-learner-{job3}.out").read_text()
    assert len(list(run_dir.glob("slurm-actors-*.out"))) == 3
    # W&B's service was not signalled: the learner's own session finished the run, in the run's group
    path = wandb_file(final["wandb_dir"])
    assert wait_finished(path)
    assert run_record(path).run_group == "cartpole-slurm"
    assert wandb_summary(path)["updates"] == final["updates"]
    # the per-actor metrics reached W&B too, although the first learner was killed with its service
    logged = {k for p in run_files(run_dir) for row in rows(p) for k in row}
    assert {f"actors/{i}/env_steps_per_s" for i in range(3)} <= logged, sorted(logged)


def test_finished_run_is_refused_until_its_budget_is_raised(cluster, tmp_path):
    """Resuming a run that ended by its budget would end at once and replace its summary."""
    run_dir = tmp_path / "done"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"not read: the scripts refuse before any job")
    summary = json.dumps({"best_eval_return": 500.0, "stop_reason": "budget: 4,000 env steps reached"},
                         indent=2)
    (run_dir / "summary.json").write_text(summary)
    for args in (("resume.sh", run_dir), ("launch.sh", run_dir, 1)):
        done = script(cluster, *args, check=False)
        assert done.returncode == 1 and "has finished (budget: 4,000 env steps reached" in done.stderr
        assert "--budget.max-env-steps" in done.stderr
    assert not (run_dir / "learner.jobid").exists() and (run_dir / "summary.json").read_text() == summary


def test_scripts_find_mouse_without_an_active_venv(tmp_path):
    """Jobs inherit the submitting shell: without a venv on PATH (and with a `mouse/` source
    directory in the working directory) the scripts still hand them a mouse program."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "mouse").exists(), "the test runs from a venv with mouse installed"

    def found(path: str, **env) -> subprocess.CompletedProcess:
        cmd = f'source "{SLURM}/common.sh"; find_mouse; echo "$MOUSE"'
        base = {k: v for k, v in os.environ.items() if k not in ("MOUSE", "VIRTUAL_ENV")}
        return subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True,
                              env={**base, "PATH": path, **env})

    # PATH with an empty entry (the working directory, whose mouse/ is the source package)
    plain = "/usr/local/bin:/usr/bin:/bin:"
    done = found(plain)
    if (REPO / ".venv" / "bin" / "mouse").exists():  # ./dev.sh made the repository's venv
        assert done.returncode == 0 and done.stdout.strip() == str(REPO / ".venv" / "bin" / "mouse")
    else:
        assert done.returncode == 1 and "set MOUSE=" in done.stderr
    # an active venv; MOUSE as a command line, made absolute
    assert found(f"{venv_bin}:{plain}").stdout.strip() == str(venv_bin / "mouse")
    done = found(plain, MOUSE="python3 -m mouse", PATH=f"{venv_bin}:{plain}")
    assert done.stdout.strip() == f"{venv_bin / 'python3'} -m mouse"
    done = found(plain, MOUSE="mouse", PATH=plain)  # the source directory is not a program
    assert done.returncode == 1 and "is not a program" in done.stderr
