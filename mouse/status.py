"""Status files: what a running learner or actor writes for supervisors and tests to read.

A status file is one JSON object replaced in one step (write, then rename), so
a reader never sees half of it. Tests wait on these, never on console text.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def write_status(path: Path | str | None, status: dict) -> None:
    """Replace ``path`` with ``status`` (plus pid and time); no-op when ``path`` is None."""
    if path is None:
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**status, "pid": os.getpid(), "time": time.time()}, indent=1))
    os.replace(tmp, path)


def read_status(path: Path | str) -> dict | None:
    """The last status written at ``path``, or None when there is none yet."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
