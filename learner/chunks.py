"""Checking the record chunks of one ingest burst together, with each chunk's verdict its own.

The ingest thread drains every chunk queued on its records socket (``wire.open_chunk``:
header, sender and frames checked, records left as numpy views of the frames), then
``check_chunks`` gives each one the verdict checking it alone would: None (store it) or
the first of, in this order,

    bad_values       ``mouse.records.value_problems`` (NaN/inf, magnitudes, ranges, episode
                     starts), then each stream's steps consecutive within the chunk, then the
                     episodes it ends (``mouse.records.episode_problems``)
    foreign_streams  a record or an episode of a stream outside the sender's own range
    bad_values       episodes that are not the ones its records end: one per record that ends
                     an episode, of its stream, as long as that record's ``time``

Every check of the records is a reduction, so a burst where all chunks pass is found with one
pass over the chunks' fields concatenated (a few dozen numpy calls whatever the number of
chunks; the episodes, when records end some, are checked chunk by chunk);
pairs of records that straddle two chunks are left out of the continuity and grouping
tests. Only when that pass finds something is each chunk checked alone, to name the bad
ones and their reasons exactly. Accepted chunks leave grouped by stream (a chunk that is
not is sorted, stably, like ``StreamReplay.ingest`` does), ready for
``StreamReplay.ingest_arrays``: one copy from the frames into the storage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mouse.records import (ALIVE, RecordSpec, episode_ends, episode_problems, next_time,
                           stream_continuity_problems, value_fields, value_problems)


@dataclass(slots=True)
class Received:
    """A chunk whose frames passed ``wire.open_chunk``, from session ``st``."""

    st: object  # learner.sessions.ActorState
    actor_id: int
    n: int
    arrays: dict[str, np.ndarray]  # {field: [n, ...]}, views of the frames (never written)
    episodes: list[dict]  # the episodes its records end (wire: well formed)


def own_streams(actor_id: int, num_envs: int) -> range:
    return range(actor_id * num_envs, (actor_id + 1) * num_envs)


def check_chunks(chunks: list[Received], spec: RecordSpec, num_envs: int) -> list[tuple[str, str] | None]:
    """Per chunk: None (valid, its arrays now grouped by stream) or (reason, detail)."""
    if _all_pass(chunks, spec, num_envs):
        return [None] * len(chunks)
    return [_verdict(c, spec, num_envs) for c in chunks]


def _all_pass(chunks: list[Received], spec: RecordSpec, num_envs: int) -> bool:
    """Every chunk is valid, owns its streams and is grouped by stream (one pass over all)."""
    names = (*value_fields(spec), "stream_id")
    if len(chunks) == 1:
        cat = chunks[0].arrays
        base = chunks[0].actor_id * num_envs
    else:
        cat = {k: np.concatenate([c.arrays[k] for c in chunks]) for k in names}  # [sum n]
        base = np.repeat([c.actor_id * num_envs for c in chunks], [c.n for c in chunks])
    if value_problems(cat, spec):
        return False
    sid, time, done = cat["stream_id"], cat["time"], cat["done"]
    if (done != ALIVE).any() or any(c.episodes for c in chunks):
        if any(_episode_verdict(c, spec, num_envs) for c in chunks):
            return False
    if ((sid - base).view(np.uint64) >= num_envs).any():  # negative differences wrap to huge
        return False
    inner = np.ones(len(sid) - 1, dtype=bool)  # [sum n - 1]: pair (i, i+1) lies in one chunk
    inner[np.cumsum([c.n for c in chunks[:-1]], dtype=np.int64) - 1] = False
    if (inner & (sid[1:] < sid[:-1])).any():  # a chunk not grouped by stream: sorted one by one
        return False
    # the continuity rule, one pass: a stream's next record in a chunk is its next step
    return not (inner & (sid[1:] == sid[:-1]) & (time[1:] != next_time(time[:-1], done[:-1]))).any()


def _verdict(c: Received, spec: RecordSpec, num_envs: int) -> tuple[str, str] | None:
    """Chunk ``c`` checked alone; sorts its arrays by stream when it passes ungrouped."""
    problems = value_problems(c.arrays, spec)
    sid = c.arrays["stream_id"]
    if not problems:
        problems = stream_continuity_problems(sid, c.arrays["time"], c.arrays["done"])
    if problems:
        return "bad_values", "; ".join(problems)
    own = own_streams(c.actor_id, num_envs)
    if ((sid - own.start).view(np.uint64) >= num_envs).any():
        return "foreign_streams", f"actor {c.actor_id} sent records of streams outside {own}"
    verdict = _episode_verdict(c, spec, num_envs)
    if verdict is not None:
        return verdict
    if (sid[1:] < sid[:-1]).any():  # a stream's records become consecutive storage rows
        order = np.argsort(sid, kind="stable")
        c.arrays = {k: v[order] for k, v in c.arrays.items()}
    return None


def _episode_verdict(c: Received, spec: RecordSpec, num_envs: int) -> tuple[str, str] | None:
    """What is wrong with the episodes chunk ``c`` ends, if anything."""
    problems = episode_problems(c.episodes, spec)
    if problems:
        return "bad_values", "; ".join(problems[:3])
    own = own_streams(c.actor_id, num_envs)
    if any(e["stream_id"] not in own for e in c.episodes):
        return "foreign_streams", f"actor {c.actor_id} sent episodes of streams outside {own}"
    ends = episode_ends(c.arrays["stream_id"], c.arrays["time"], c.arrays["done"])
    if sorted((e["stream_id"], e["length"]) for e in c.episodes) != ends:
        return "bad_values", (f"the chunk's {len(c.episodes)} episodes (stream, length) are not the "
                              f"{len(ends)} its records end")
    return None
