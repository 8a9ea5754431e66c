"""A disk that fills up for real: a small tmpfs the test mounts, and a filler that keeps it full.

Tests run as root here, so a read-only mode bit stops nothing; a full filesystem refuses
everyone. Mounting needs CAP_SYS_ADMIN: where it is not permitted the test is skipped and says why.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs mounted at a fresh directory (unmounted after the test)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or f'mount exited {r.returncode}'}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


_ZEROS = bytes(1 << 20)


class Filler(threading.Thread):
    """Keeps at most ``leave`` bytes free on ``disk`` (what another job filling it would do: space a
    writer gives back is taken again) until ``release()``, which deletes what it wrote."""

    def __init__(self, disk: Path, leave: int = 0):
        super().__init__(daemon=True)
        self.path, self.leave = Path(disk) / "filler", leave
        self._done = threading.Event()
        self.fill()
        self.start()

    def fill(self) -> None:
        with open(self.path, "ab", buffering=0) as f:
            free = shutil.disk_usage(self.path.parent).free
            while free > self.leave:
                try:  # in pieces of at most 1 MiB: never more than ``leave`` below it
                    f.write(_ZEROS[:min(free - self.leave, len(_ZEROS))])
                except (OSError, MemoryError):  # someone wrote meanwhile (a tmpfs write can also
                    return  # fail with ENOMEM, which Python raises as MemoryError): look again next round
                free = shutil.disk_usage(self.path.parent).free

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.fill()

    def release(self) -> None:
        self._done.set()
        self.join()
        self.path.unlink()
