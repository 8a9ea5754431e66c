"""Does the replay fit? Checked before the learner builds it.

The storage takes its memory as records arrive (pages are touched when the ring first
passes over them), so a ``replay.capacity`` too large for the node, or for the job's memory
limit (Slurm, Kubernetes and containers set it through the cgroup), would run for hours and
then be killed by the kernel once the ring fills, and again on every resume. The learner
refuses such a capacity at start instead, in one line that says how much fits, and warns
when the replay would take most of the room (the model, batches and evaluation need some).
With ``replay.storage=memmap`` the records go to files, so the disk under the scratch
directory must hold them, and only the index stays in memory.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from mouse.records import RecordSpec
from mouse.replay.config import ReplayConfig
from mouse.replay.sampler import StreamWindowSampler

log = logging.getLogger("mouse.learner")

WARN_SHARE = 0.8  # of the room, above which the learner warns
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def gib(n: float) -> str:
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


def cgroup_limit(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> int | None:
    """The smallest memory limit on this process's cgroup and its parents (v2 ``memory.max``,
    v1 ``memory.limit_in_bytes``); None when there is none."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and not controllers:
            base, name = Path(root), "memory.max"
        elif "memory" in controllers.split(","):
            base, name = Path(root) / "memory", "memory.limit_in_bytes"
        else:
            continue
        level = Path("/") / path.strip().lstrip("/")
        for d in (level, *level.parents):  # a limit on a parent binds too
            try:
                text = (base / str(d).lstrip("/") / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < UNLIMITED:
                limits.append(int(text))
    return min(limits) if limits else None


def memory_room() -> tuple[int, str] | None:
    """(bytes, what they are): the most memory this learner can take."""
    rooms = []
    available = meminfo_available()
    if available is not None:
        rooms.append((available, "of memory available on this node (MemAvailable)"))
    limit = cgroup_limit()
    if limit is not None:
        rooms.append((limit, "memory limit of this job (cgroup)"))
    return min(rooms) if rooms else None


def disk_room(directory: str | None) -> tuple[int, str]:
    """(bytes free, where) for the memmap files: ``directory`` or the temporary directory."""
    path = Path(directory or tempfile.gettempdir()).absolute()
    while not path.exists():  # the scratch directory is made later: its disk is a parent's
        path = path.parent
    return shutil.disk_usage(path).free, f"free on the disk of {path}"


def check_replay_room(cfg: ReplayConfig, spec: RecordSpec, memory: tuple[int, str] | None = None,
                      disk: tuple[int, str] | None = None) -> None:
    """Raise ValueError when the replay cannot fit; warn when it takes most of the room, else
    log its size. ``memory``/``disk``: (bytes, what they are), measured here when not given."""
    record, cap, slot = spec.record_nbytes(), cfg.capacity, StreamWindowSampler.SLOT_BYTES
    records, index = cap * record, cap * slot
    memory = memory or memory_room()
    on_disk = cfg.storage == "memmap"
    if on_disk:  # (bytes, room, bytes per record, what)
        needs = [(index, memory, slot, "the replay's index"),
                 (records, disk or disk_room(cfg.scratch_dir), record, "the replay's memmap files")]
    else:
        needs = [(records + index, memory, record + slot, "the replay")]
    what = (f"replay.capacity={cap:,} records of {record:,} B: {gib(records)} "
            f"{'on disk' if on_disk else 'in memory'}, {gib(index)} index")
    warned = False
    for need, room, per_record, name in needs:
        if room is None:
            continue
        free, where = room
        if need > free:
            fix = ("point --replay.scratch-dir at a disk with room" if on_disk else
                   "put the records on disk with --replay.storage memmap --replay.scratch-dir DIR")
            raise ValueError(f"{what}: {name} would take {gib(need)}, more than the {gib(free)} {where}; "
                             f"lower --replay.capacity (at most about {int(WARN_SHARE * free) // per_record:,} "
                             f"fit here) or {fix}")
        if need > WARN_SHARE * free:
            warned = True
            log.warning("%s: %s takes %s of the %s %s; the learner may run out of it once the ring fills",
                        what, name, gib(need), gib(free), where)
    if not warned:
        log.info("%s", what)
