"""A single-node Slurm cluster of its own, for tests: Debian's slurmctld, slurmd and munge,
started in a temporary directory and stopped again (also when a test fails).

Everything is private to the directory: a munge daemon with its own key and socket
(AuthInfo=socket=...), free ports for slurmctld and slurmd, state, spool and logs. The
node advertises 16 CPUs whatever it has (SlurmdParameters=config_overrides) and jobs
share them (OverSubscribe=FORCE), so a learner and several actor jobs run on a 2-core
machine; proctrack/linuxproc and task/none need no cgroups. The commands reach it
through SLURM_CONF, which ``env`` sets.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
PROGRAMS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def program(name: str) -> str | None:
    found = shutil.which(name)
    return found or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def ensure_installed() -> str | None:
    """None when Slurm and munge are here, installing Debian's packages with apt-get where they
    are not (as root); otherwise why they cannot be had."""
    if all(program(p) for p in PROGRAMS):
        return None
    missing = [p for p in PROGRAMS if not program(p)]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"Slurm is not installed ({', '.join(missing)} missing) and installing it needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {(done.stderr or done.stdout)[-800:]}"
    missing = [p for p in PROGRAMS if not program(p)]
    return f"still missing after apt-get install: {missing}" if missing else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """``start()`` brings the daemons up; ``stop()`` cancels every job, waits for them, stops the
    daemons and ends any process a job left behind (found by this cluster's SLURM_CONF)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: dict[str, Path] = {}  # name -> pid file

    # --- set-up ------------------------------------------------------------------------------
    def _write_conf(self) -> None:
        r = self.root
        for d in ("state", "spool", "log", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o755)  # munged wants its socket directory searchable by all
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(f"""\
ClusterName=mousetest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.sock
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=30
MinJobAge=600
NodeName={self.node} NodeAddr=127.0.0.1 CPUs=16 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
""")

    def _daemon(self, name: str, pid_file: Path, *args: str) -> None:
        done = subprocess.run([program(name), *args], capture_output=True, text=True, env=self.env,
                              timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{name} did not start: {done.stderr or done.stdout}\n{self.logs()}")
        self.daemons[name] = pid_file

    def start(self) -> None:
        self._write_conf()
        r = self.root
        self._daemon("munged", r / "munge" / "munged.pid", "--force", f"--socket={r}/munge/munge.sock",
                     f"--key-file={r}/munge/munge.key", f"--log-file={r}/log/munged.log",
                     f"--pid-file={r}/munge/munged.pid", f"--seed-file={r}/munge/munged.seed")
        self._daemon("slurmctld", r / "slurmctld.pid", "-c")
        self._daemon("slurmd", r / "slurmd.pid", "-N", self.node)
        deadline = time.monotonic() + 60
        while self.sh("sinfo", "-h", "-o", "%T", check=False).stdout.strip() != "idle":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node never came up idle\n{self.logs()}")
            time.sleep(0.5)

    # --- use ---------------------------------------------------------------------------------
    def sh(self, *cmd, env: dict | None = None, check: bool = True, timeout: float = 120):
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, cmd))} exited {done.returncode}\n"
                                 f"stdout: {done.stdout}\nstderr: {done.stderr}")
        return done

    def jobs(self) -> str:
        return self.sh("squeue", "-h", "-o", "%i %j %T", check=False).stdout

    def job_field(self, job: str, field: str) -> str:
        """JobState, ExitCode, ... of a job, from `scontrol show job`."""
        out = self.sh("scontrol", "show", "job", job, check=False).stdout
        return next((w.split("=", 1)[1] for w in out.split() if w.startswith(field + "=")), "")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted((self.root / "log").glob("*.log")))

    # --- tear-down ---------------------------------------------------------------------------
    def stop(self) -> None:
        if "slurmctld" in self.daemons:
            self.sh("scancel", "--user", "root", check=False)
            deadline = time.monotonic() + 60
            while self.jobs().strip() and time.monotonic() < deadline:
                time.sleep(1)
        for name in ("slurmd", "slurmctld", "munged"):
            if name in self.daemons:
                _end(_read_pid(self.daemons.pop(name)))
        for pid in self._leftovers():
            _end(pid)

    def _leftovers(self) -> list[int]:
        """Processes that carry this cluster's SLURM_CONF: job processes and step daemons."""
        mark = f"SLURM_CONF={self.conf}".encode()
        found = []
        for env in Path("/proc").glob("[0-9]*/environ"):
            try:
                if mark in env.read_bytes().split(b"\0") and int(env.parent.name) != os.getpid():
                    found.append(int(env.parent.name))
            except (OSError, ValueError):
                continue
        return found


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _end(pid: int | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if pid is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _running(pid):
                return
            time.sleep(0.1)


def _running(pid: int) -> bool:
    """Alive and not a zombie (one waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"
