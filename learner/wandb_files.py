"""Read W&B offline run files (`run-*.wandb`) back: what a run logged, for `mouse plot` on runs
without metrics.jsonl, and for tests.

The file is a LevelDB-style log of protobuf ``Record``s: a 7-byte file header,
then 32 KiB blocks of chunks (crc32 u32, length u16, type u8: 1 full, 2 first,
3 middle, 4 last). wandb 0.31 no longer ships a Python reader.
"""

from __future__ import annotations

import glob
import json
import struct
from pathlib import Path

_BLOCK = 32 * 1024


def _chunks(data: bytes):
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            return
        if kind == 1:
            yield payload
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            yield pending + payload


def run_files(run_root: Path) -> list[Path]:
    """The offline run files under ``run_root``/wandb, oldest run first (a resumed run adds one)."""
    return sorted(Path(p) for p in glob.glob(str(Path(run_root) / "wandb" / "offline-run-*" / "run-*.wandb")))


def records(path: Path) -> list:
    """Every protobuf ``Record`` of one offline run file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for raw in _chunks(Path(path).read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        out.append(rec)
    return out


def history(run_root: Path) -> list[dict]:
    """Every logged row of the offline runs under ``run_root``/wandb, in order (W&B adds ``_step``,
    ``_timestamp`` and ``_runtime`` to each row)."""
    files = run_files(run_root)
    if not files:
        raise ValueError(f"{run_root} has no offline W&B run files (wandb/offline-run-*/run-*.wandb)")
    return [{(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            for path in files for rec in records(path) if rec.WhichOneof("record_type") == "history"]
