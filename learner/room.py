"""Does the replay fit? Checked before the learner builds it.

The storage takes its memory as records arrive (pages are touched when the ring first
passes over them), so a ``replay.capacity`` too large for the node, or for the job's memory
limit (Slurm, Kubernetes and containers set it through the cgroup), would run for hours and
then be killed by the kernel once the ring fills, and again on every resume. The learner
refuses such a capacity at start instead, in one line that says how much fits, and warns
when the replay would take most of the room (the model, batches and evaluation need some).
With ``replay.storage=memmap`` and a ``replay.scratch_dir`` the records go to files there,
so that disk must hold them and only the index stays in memory; without a scratch directory
tensordict puts the files in /dev/shm, which is memory.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import NamedTuple

from mouse.records import RecordSpec
from mouse.replay.config import ReplayConfig
from mouse.replay.sampler import StreamWindowSampler

log = logging.getLogger("mouse.learner")

WARN_SHARE = 0.8  # of the room, above which the learner warns
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def bytes_text(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def meminfo_available(path: str = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes (None off Linux)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# (limit, usage, the usage's reclaimable page cache: a line of memory.stat) per cgroup version
CGROUP_FILES = {2: ("memory.max", "memory.current", "inactive_file"),
                1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")}


def _number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def cgroup_room(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes left under the tightest memory limit on this process's cgroup and its parents
    (v2 ``memory.max``, v1 ``memory.limit_in_bytes``): the limit less what the cgroup uses,
    reclaimable page cache aside (the working set the kernel enforces it on); None when
    there is no limit."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and not controllers:
            base, (limit_file, usage_file, cache_key) = Path(root), CGROUP_FILES[2]
        elif "memory" in controllers.split(","):
            base, (limit_file, usage_file, cache_key) = Path(root) / "memory", CGROUP_FILES[1]
        else:
            continue
        level = Path("/") / path.strip().lstrip("/")
        for d in (level, *level.parents):  # a limit on a parent binds too
            group = base / str(d).lstrip("/")
            limit = _number(group / limit_file)
            if limit is None or limit >= UNLIMITED:
                continue
            used = (_number(group / usage_file) or 0) - _stat(group / "memory.stat", cache_key)
            rooms.append(max(0, limit - max(0, used)))
    return min(rooms) if rooms else None


def memory_room() -> tuple[int, str] | None:
    """(bytes, what they are): the most memory this learner can still take."""
    rooms = []
    available = meminfo_available()
    if available is not None:
        rooms.append((available, "of memory available on this node (MemAvailable)"))
    left = cgroup_room()
    if left is not None:
        rooms.append((left, "left under this job's memory limit (cgroup)"))
    return min(rooms) if rooms else None


def disk_room(directory: str) -> tuple[int, str] | None:
    """(bytes, where) for the memmap files in ``directory``: free space on its disk, plus what
    replay files already there take (a resumed run writes over them); None if unreadable."""
    path = Path(directory).absolute()
    try:
        reused = sum(f.stat().st_blocks * 512 for f in path.rglob("*.memmap")) if path.is_dir() else 0
        while not path.exists():  # the scratch directory is made later: its disk is a parent's
            path = path.parent
        return shutil.disk_usage(path).free + reused, f"free on the disk of {path}"
    except OSError:
        return None


class _Need(NamedTuple):
    nbytes: int
    room: tuple[int, str] | None  # (bytes, what they are)
    per_record: int
    name: str
    also: str  # what else helps a new run, beside a lower capacity
    elsewhere: str  # where a resumed run (whose replay settings are fixed) fits


def check_replay_room(cfg: ReplayConfig, spec: RecordSpec, memory: tuple[int, str] | None = None,
                      disk: tuple[int, str] | None = None, resuming: bool = False) -> None:
    """Raise ValueError when the replay cannot fit; warn when it takes most of the room, else
    log its size. ``memory``/``disk``: (bytes, what they are), measured here when not given.
    ``resuming``: the run's replay settings are fixed (its checkpoint and replay were made with
    them), so the only way on is a node, job or disk with more room."""
    record, cap, slot = spec.record_nbytes(), cfg.capacity, StreamWindowSampler.SLOT_BYTES
    records, index = cap * record, cap * slot
    memory = memory or memory_room()
    if cfg.storage == "memmap" and cfg.scratch_dir is not None:
        where = f"on disk in {cfg.scratch_dir}"
        needs = [_Need(index, memory, slot, "the replay's index", "", "with more memory"),
                 _Need(records, disk or disk_room(cfg.scratch_dir), record, "the replay's memmap files",
                       " or point --replay.scratch-dir at a disk with room", "with more room on that disk")]
    else:  # memmap files without a scratch directory go to /dev/shm (tensordict): memory too
        where = "in memory" if cfg.storage == "tensor" else "in memory (/dev/shm: no --replay.scratch-dir)"
        needs = [_Need(records + index, memory, record + slot, "the replay",
                       " or put the records on disk with --replay.storage memmap --replay.scratch-dir DIR",
                       "with more memory")]
    needs = [n for n in needs if n.room is not None]  # a room this system does not tell is not checked
    what = f"replay.capacity={cap:,} records of {record:,} B: {bytes_text(records)} {where}, {bytes_text(index)} index"
    fits = min((int(WARN_SHARE * n.room[0]) // n.per_record for n in needs), default=cap)
    warned = False
    for n in needs:
        free, room_name = n.room
        if n.nbytes > free:
            fix = (f"a resumed run keeps its replay settings: resume it on a node or job {n.elsewhere}"
                   if resuming else f"lower --replay.capacity (at most about {fits:,} fit here){n.also}")
            raise ValueError(f"{what}: {n.name} would take {bytes_text(n.nbytes)}, more than the {bytes_text(free)} "
                             f"{room_name}; {fix}")
        if n.nbytes > WARN_SHARE * free:
            warned = True
            log.warning("%s: %s takes %s of the %s %s; the learner may run out of it once the ring fills",
                        what, n.name, bytes_text(n.nbytes), bytes_text(free), room_name)
    if not warned:
        log.info("%s", what)
