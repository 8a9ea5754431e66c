"""Durable file writes: a file is whole and on disk before any name that readers use points at it.

``save_durably(obj, path)`` writes ``obj`` (``torch.save``) to a temporary
sibling, flushes and fsyncs it, renames it over ``path`` and fsyncs the
directory, so after a kill, a node crash or a power loss ``path`` holds either
the old file or the new one, never a part of one. A failed write (a full disk,
a read-only or vanished mount) raises ``OSError`` and removes its temporary
file, giving the space back (``torch.save``'s own writer reports them as a
``RuntimeError``, so ``write_file`` hands it a file that keeps the ``OSError``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable

import torch


def fsync_dir(directory: Path | str) -> None:
    """Make the renames and deletions in ``directory`` durable (its entries, not its files' data)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _KeepWriteErrors:
    """A file for ``torch.save`` that keeps the ``OSError`` a write raised: torch's archive writer
    swallows it and fails later with a ``RuntimeError`` ("unexpected pos ...")."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def write_file(path: Path, obj) -> None:
    """``torch.save(obj)`` to ``path`` itself, flushed and fsynced: no rename, no directory sync."""
    try:
        with open(path, "wb") as f:
            out = _KeepWriteErrors(f)
            try:
                torch.save(obj, out)
            except RuntimeError:
                if out.error is None:
                    raise
            if out.error is not None:  # the disk refused: say so, not torch's archive error
                raise out.error
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk: give the space back
            path.unlink(missing_ok=True)
        raise


def save_durably(obj, path: Path | str, before_replace: Callable[[], None] | None = None) -> None:
    """Replace ``path`` with ``torch.save(obj)`` in one step that survives a crash (see the module
    doc). ``before_replace()`` runs once the new file is on disk, just before it takes the name."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    write_file(tmp, obj)
    try:
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
