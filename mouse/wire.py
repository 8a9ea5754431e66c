"""The wire format: the one module that turns messages into ZeroMQ frames and back.

Every message is one ZeroMQ multipart message. Frame 0 is the header::

    offset  bytes  content
    0       5      magic b"MOUSE"
    5       2      wire version, uint16 little-endian (WIRE_VERSION; bumped on any change below)
    7       1      kind code, uint8 (KIND_CODES)
    8       ...    body: one UTF-8 JSON object, no NaN/Infinity; frame 0 is at most MAX_HEADER_BYTES

except that a chunk's body starts with its ``seq`` (8 bytes, uint64 little-endian) and the
JSON object follows: the JSON is the same for every chunk of a session (the receiver parses
and checks it once), the number changes with each.

Frames 1..k are raw tensor bytes, C-contiguous, little-endian, one tensor per frame, in
the order the header lists them. ``dtype`` is the torch dtype name without "torch."
("float32", "int64", "uint8", "bool", ...; DTYPES); bool bytes are 0 or 1. A chunk whose
records end episodes has one frame more, the last: those episodes' statistics, a UTF-8 JSON
list of {"stream_id", "return", "length", "policy_version"} (at most one per record). So
they travel, are resent and are taken exactly as their records are: exactly once. (The
learner takes a chunk only when its episodes are exactly the ones its records end: one per
record with ``done`` set, of its stream, ``length`` that record's ``time``;
``mouse.records.episode_ends``.)

    code  kind       direction        frame 0 body                           frames 1..k (header order)
    1     chunk      actor->learner   seq, then {"actor_id", "token",        per field: [n, *shape],
                                       "n": int, "fields": [[name, dtype,    n * itemsize * prod(shape) bytes;
                                       shape]]}                              then the episodes ended (if any)
    2     weights    learner->actors  {"version", "incarnation",             per tensor: [*shape],
                                       "tensors": [[name, dtype, shape]]}    itemsize * prod(shape) bytes
    3     hello      actor->learner   {"actor_id" (-1 = assign me one), "token" ("" = none yet), "pid",
                                       "host", "version": policy version it holds (-1 = none)}
    4     heartbeat  actor->learner   {"actor_id", "token", "counters": {name: number}} (HEARTBEAT_COUNTERS)
    5     (wire 3's episode message: the episodes now end their chunk)
    6     bye        actor->learner   {"actor_id", "token"}
    7     stop       learner->actor   {"version", "incarnation", "reason", "refused": bool, "received"}
                                      (leave now, and why; refused: the answer to a hello it will not take;
                                      not refused: the learner is stopping, also the answer to a hello then)
    8     welcome    learner->actor   {"actor_id", "token", "incarnation", "config": the run's config,
                                       "credits": credits granted to this session so far}
    9     ack        learner->actor   {"version", "incarnation", "credits": credits granted so far,
                                       "received": the session's chunks taken in order so far}
    10    rejoin     learner->actor   {"incarnation", "reason"}  (your session is unknown here: say hello)

Identity. The learner's welcome gives each actor session a random ``token`` (TOKEN_HEX hex
digits); every later actor message carries it with the actor id, and the learner drops what
does not match. ``incarnation`` (INCARNATION_HEX hex digits) is drawn once per learner
process: versions only rise within one incarnation, and an actor follows a new one whatever
its version. ``credits`` are cumulative (the session's total grant): a lost ack costs nothing,
the next one carries the total. Versions lie in [0, MAX_VERSION] (-1 where "none yet").

Delivery. A chunk's ``seq`` numbers the session's chunks from 0; the learner takes them in
that order only and says in every ack and stop how many it has taken (``received``), so an
actor resends what a reset connection lost and the learner drops what it already holds
(``learner.ingest``).

Encoding is zero-copy: frames 1..k are memoryviews of the (contiguous, CPU) tensors, so
leave the tensors unchanged until ZeroMQ has sent them. Decoding copies each frame exactly
once into a fresh, writable tensor (a received frame is read-only memory).

A chunk's ``shape`` is the per-record shape (the record count n is in the header) and
its field set must be exactly the receiver's ``RecordSpec.fields()``. Control messages
(kinds 3-10) are frame 0 only; their bodies have exactly the keys above (CONTROL_SCHEMAS),
with bounded values: a heartbeat's counters are a subset of HEARTBEAT_COUNTERS, numbers
in [0, MAX_VERSION] (version from -1); strings are at most MAX_TEXT characters.

Decoding validates everything before returning and raises nothing but ``WireError``,
whose ``reason`` is one of REASONS (the learner counts ``wire/rejected/<reason>``):

    bad_magic        frame 0 does not start with b"MOUSE"
    bad_version      wire version is not WIRE_VERSION
    bad_kind         unknown kind code, or a kind this decoder does not accept
    bad_header       frame 0 is not a JSON object with the kind's keys and value types
    bad_fields       chunk field set differs from the spec; a name repeated
    bad_dtype        unknown dtype, or not the spec's dtype
    bad_shape        shape not a list of ints >= 0 (bounded), or not the spec's shape
    missing_frames   fewer frames than the header announces (or none at all)
    too_many_frames  more frames than the header announces
    bad_length       a frame's byte length is not itemsize * prod(shape) (or not a byte buffer)
    oversize         more than max_records records, or frame 0 over MAX_HEADER_BYTES
    bad_values       records break the contract (mouse.records: NaN/inf, magnitudes, done, streams,
                     versions, ...) or a bool byte is not 0/1
    bad_body         a control body misses a key, has an extra one, or a value of the wrong type or range;
                     a chunk's episodes frame is not a list of such episodes, or has more than n

A chunk decoder may be given ``admit(header)``, called with ``{"actor_id", "token", "n", "seq"}``
once the header is known good and before any record frame is read: the learner checks the
sender there, so a forged chunk costs it no copy.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import operator
import struct
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import zmq
from tensordict import TensorDict

from mouse.replay.torchrl_compat import unchecked_tensordict
from mouse.records import MAX_VERSION, RecordError, RecordSpec, validate_records

if sys.byteorder != "little":  # frames are the tensors' native bytes
    raise ImportError("mouse.wire needs a little-endian host")

MAGIC = b"MOUSE"
WIRE_VERSION = 4
TOKEN_HEX, INCARNATION_HEX = 32, 16  # session token: 128 random bits; learner incarnation: 64
MAX_TEXT = 1024  # host names and reasons
HEARTBEAT_COUNTERS = ("env_steps", "chunks_sent", "chunks_resent", "chunks_dropped", "send_blocked_s",
                      "episodes", "version", "bad_replies", "bad_weights", "rejoins")  # the only keys a heartbeat may carry
_PREFIX = struct.Struct("<5sHB")  # magic, version, kind code
_SEQ = struct.Struct("<Q")  # a chunk's number in its session, first in its body
MAX_HEADER_BYTES = 1 << 20
DEFAULT_MAX_RECORDS = 65536
MAX_DIMS = 16
MAX_SPAN = 1 << 48  # bound on prod(max(d, 1)) of a shape: torch's strides must not overflow

KIND_CODES = {"chunk": 1, "weights": 2, "hello": 3, "heartbeat": 4, "bye": 6, "stop": 7,
              "welcome": 8, "ack": 9, "rejoin": 10}
_KIND_BY_CODE = {code: kind for kind, code in KIND_CODES.items()}

REASONS = (
    "bad_magic", "bad_version", "bad_kind", "bad_header", "bad_fields", "bad_dtype", "bad_shape",
    "missing_frames", "too_many_frames", "bad_length", "oversize", "bad_values", "bad_body",
)

DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
              torch.float16, torch.bfloat16, torch.float32, torch.float64)
}
_DTYPE_NAME = {d: name for name, d in DTYPES.items()}
_NUMPY = {d: torch.empty(0, dtype=d).numpy().dtype for d in DTYPES.values() if d is not torch.bfloat16}

Frames = Sequence  # of bytes | memoryview | zmq.Frame


class WireError(ValueError):
    """A message that cannot be accepted; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        self.reason, self.detail = reason, detail
        self.sender: tuple[int, str, int] | None = None  # (actor_id, token, seq) once a chunk's header named them
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Message:
    """Any decoded message: ``body`` is the chunk/weights header or the control body."""

    kind: str
    body: dict
    records: TensorDict | None = None  # chunk: [n] step records
    tensors: dict[str, torch.Tensor] | None = None  # weights: the state dict


# --- frames and headers -------------------------------------------------------------------

def _header(kind: str, body: dict, lead: bytes = b"") -> bytes:
    text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    return _PREFIX.pack(MAGIC, WIRE_VERSION, KIND_CODES[kind]) + lead + text.encode()


def _byte_view(frame, i: int) -> memoryview:
    """A flat byte view of a frame without copying (zmq.Frame from recv(copy=False): .buffer)."""
    try:
        view = getattr(frame, "buffer", frame)
        if type(view) is not memoryview:  # (a zmq.Frame's buffer already is one: no second view)
            view = memoryview(view)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except (TypeError, ValueError, AttributeError):
        raise WireError("bad_length" if i else "bad_header",
                        f"frame {i} is not a contiguous byte buffer ({type(frame).__name__})") from None


_FLAT = (bytes, zmq.Frame)  # len() is the byte count and the buffer is flat bytes


def _flat(frame, i: int):
    """A frame as something whose ``len()`` is its byte count and whose buffer is flat bytes,
    without copying: the frame itself when it is bytes or a zmq.Frame (``recv(copy=False)``:
    a memoryview of it costs more than reading the frame), else a byte view of it."""
    return frame if type(frame) in _FLAT else _byte_view(frame, i)


def _raw(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, zero-copy (any dtype, bfloat16 included)."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"{text} overflows")
    return x


def _open(frames: Frames) -> tuple[str, bytes, list]:
    """Check frame 0's prefix and size; return (kind, body text, [frame 0's byte view, the
    other frames flat (``_flat``)])."""
    if not isinstance(frames, (list, tuple)):
        raise WireError("bad_header", f"expected a list of frames, got {type(frames).__name__}")
    if not frames:
        raise WireError("missing_frames", "empty message")
    head = _byte_view(frames[0], 0)
    if head[:5] != MAGIC:
        raise WireError("bad_magic", f"frame 0 starts with {bytes(head[:5])!r}, expected {MAGIC!r}")
    if head.nbytes < _PREFIX.size:
        raise WireError("bad_header", f"frame 0 has {head.nbytes} bytes, shorter than its prefix")
    _, version, code = _PREFIX.unpack_from(head)
    if version != WIRE_VERSION:
        raise WireError("bad_version", f"wire version {version}, this side speaks {WIRE_VERSION}")
    kind = _KIND_BY_CODE.get(code)
    if kind is None:
        raise WireError("bad_kind", f"unknown kind code {code}")
    if head.nbytes > MAX_HEADER_BYTES:
        raise WireError("oversize", f"frame 0 has {head.nbytes} bytes > {MAX_HEADER_BYTES}")
    start = _PREFIX.size + (_SEQ.size if kind == "chunk" else 0)  # a chunk's seq: _chunk_views reads it
    if head.nbytes < start:
        raise WireError("bad_header", f"a {kind}'s frame 0 has {head.nbytes} bytes, shorter than {start}")
    text = bytes(head[start:])
    return kind, text, [head] + [_flat(f, i) for i, f in enumerate(frames[1:], start=1)]


def _loads(text, reason: str, what: str):
    """The JSON value of a frame's UTF-8 ``text`` (no NaN/Infinity, finite floats), or WireError."""
    try:
        return json.loads(str(text, "utf-8"), parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        raise WireError(reason, f"{what} is not valid JSON: {e}") from None


def _parse(kind: str, text: bytes) -> dict:
    """The JSON object of frame 0's body."""
    body = _loads(text, "bad_header", f"{kind} body")
    if not isinstance(body, dict):
        raise WireError("bad_header", f"{kind} body is a JSON {type(body).__name__}, not an object")
    return body


def _open_kind(frames: Frames, allowed, what: str) -> tuple[str, bytes, list]:
    """``_open``, then the kind; a malformed body is reported before a wrong kind."""
    kind, text, views = _open(frames)
    if kind not in allowed:
        _parse(kind, text)
        _expect_kind(kind, allowed, what)
    return kind, text, views


def _expect_kind(kind: str, allowed, what: str) -> None:
    if kind not in allowed:
        raise WireError("bad_kind", f"{what} got a {kind!r} message")


def _is_int(x) -> bool:
    return type(x) is int  # JSON true/false are bools, never counts or ids


def _check_keys(body: dict, keys: set, reason: str, what: str) -> None:
    if body.keys() != keys:
        missing, extra = sorted(keys - body.keys(), key=str), sorted(body.keys() - keys, key=str)
        raise WireError(reason, f"{what}: missing keys {missing}, unexpected keys {extra}")


# --- tensors --------------------------------------------------------------------------------

TensorList = list[tuple[str, torch.dtype, tuple[int, ...]]]


def _tensor_list(entries, what: str) -> TensorList:
    """Parse [[name, dtype, shape], ...] from a header."""
    if not isinstance(entries, list):
        raise WireError("bad_header", f"{what} must be a list of [name, dtype, shape]")
    out, seen = [], set()
    for e in entries:
        if not (isinstance(e, list) and len(e) == 3 and isinstance(e[0], str)):
            raise WireError("bad_header", f"{what} entry {str(e)[:80]} is not [name, dtype, shape]")
        name, dtype_name, shape = e
        if name in seen:
            raise WireError("bad_fields", f"{name!r} appears twice")
        seen.add(name)
        if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
            raise WireError("bad_dtype", f"{name}: unknown dtype {str(dtype_name)[:40]!r}")
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMS
                and all(_is_int(d) and d >= 0 for d in shape)
                and math.prod(max(d, 1) for d in shape) < MAX_SPAN):
            raise WireError("bad_shape", f"{name}: shape {str(shape)[:80]} is not a list of "
                                         f"<= {MAX_DIMS} ints >= 0 spanning < 2**48")
        out.append((name, DTYPES[dtype_name], tuple(shape)))
    return out


def _check_frames(views: list, entries: TensorList, lead: tuple[int, ...]) -> None:
    """Frame count, then every frame's byte length (``_open``'s views), before anything is allocated."""
    if len(views) < 1 + len(entries):
        raise WireError("missing_frames", f"{len(views)} frames, header announces {1 + len(entries)}")
    if len(views) > 1 + len(entries):
        raise WireError("too_many_frames", f"{len(views)} frames, header announces {1 + len(entries)}")
    for view, (name, dtype, shape) in zip(views[1:], entries):
        expected = math.prod(lead + shape) * dtype.itemsize
        if len(view) != expected:
            raise WireError("bad_length", f"{name}: {len(view)} bytes, expected {expected} "
                                          f"({dtype} {list(lead + shape)})")


def _copy_tensor(view, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """Exactly one copy: read-only frame bytes -> a fresh, writable tensor (never torch.frombuffer
    on the read-only frame: it warns and would alias memory zmq may reuse)."""
    array = np.frombuffer(view, dtype=_NUMPY.get(dtype, np.uint8))
    if dtype is torch.bool and array.view(np.uint8).max(initial=0) > 1:  # other bytes are not valid bools
        raise WireError("bad_values", f"{name}: bool bytes must be 0 or 1")
    return _copy_array(array, dtype, shape)


def _copy_array(array: np.ndarray, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A fresh tensor of ``shape`` holding a copy of a frame's array (bfloat16: its raw bytes)."""
    if dtype is torch.bfloat16:  # numpy has no such type: copy the bytes into a torch tensor
        out = torch.empty(shape, dtype=dtype)
        if out.numel():
            out.view(-1).view(torch.uint8).numpy()[:] = array.reshape(-1)
        return out
    return torch.from_numpy(array.reshape(shape).copy())  # numpy's reshape: a third of torch's overhead


def _plain_tensor(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.layout != torch.strided:
        raise TypeError(f"{name}: expected a dense tensor, got {type(x).__name__}")
    if x.dtype not in _DTYPE_NAME:
        raise ValueError(f"{name}: dtype {x.dtype} cannot travel (supported: {sorted(DTYPES)})")
    return x.detach().cpu().contiguous()


# --- chunks ---------------------------------------------------------------------------------

def encode_chunk(td: TensorDict, actor_id: int, token: str, seq: int, *,
                 spec: RecordSpec | None = None, episodes: list[dict] | None = None) -> list:
    """Frames of chunk number ``seq`` (from 0) of session ``token``: [N] step records and the
    ``episodes`` they end ({"stream_id", "return", "length", "policy_version"} each); with
    ``spec``, validate the records first (RecordError)."""
    if spec is not None:
        validate_records(td, spec)
    if td.batch_dims != 1:
        raise ValueError(f"a chunk has batch dims [N], got {tuple(td.batch_size)}")
    if not _nonneg_int(actor_id) or not _token(token) or not (_is_int(seq) and 0 <= seq < 2**64):
        raise ValueError(f"actor_id must be an int >= 0, token {TOKEN_HEX} hex digits and seq an "
                         f"int in [0, 2**64), got {actor_id!r}, {token!r}, {seq!r}")
    entries, frames = [], []
    for name, x in td.items():
        x = _plain_tensor(name, x)
        entries.append([name, _DTYPE_NAME[x.dtype], list(x.shape[1:])])
        frames.append(_raw(x))
    n = int(td.batch_size[0])
    if episodes:  # (WireError is a ValueError)
        frames.append(json.dumps(_checked_episodes(episodes, n), separators=(",", ":"), allow_nan=False).encode())
    body = {"actor_id": actor_id, "token": token, "n": n, "fields": entries}
    return [_header("chunk", body, _SEQ.pack(seq)), *frames]


@functools.lru_cache(maxsize=64)
def _spec_fields(spec: RecordSpec) -> dict:
    return spec.fields()  # RecordSpec is frozen: its fields never change


def _parse_chunk_header(text: bytes, spec: RecordSpec, max_records: int) -> tuple:
    """(actor_id, token, n, fields as a tuple of [name, dtype, shape], how to view each field's
    frame) of a chunk header's JSON that matches ``spec``, or WireError. Immutable: the result
    may be cached."""
    body = _parse("chunk", text)
    _check_keys(body, {"actor_id", "token", "n", "fields"}, "bad_header", "chunk header")
    actor_id, token, n = body["actor_id"], body["token"], body["n"]
    if not (_nonneg_int(actor_id) and _token(token)):
        raise WireError("bad_header", f"actor_id {str(actor_id)[:40]} is not an int >= 0 or token "
                                      f"{str(token)[:40]} is not {TOKEN_HEX} hex digits")
    try:
        entries = _check_chunk_header(body, n, spec, max_records)
    except WireError as e:
        e.sender = (actor_id, token)  # _chunk_views adds the seq
        raise
    # how to view each frame: (name, numpy dtype, [n, *shape], bytes, bool?); bfloat16 stays raw bytes
    plan = tuple((name, _NUMPY.get(dtype, np.uint8),
                  (n, *shape) if dtype is not torch.bfloat16 else (n * math.prod(shape) * 2,),
                  n * math.prod(shape) * dtype.itemsize, dtype is torch.bool)
                 for name, dtype, shape in entries)
    return actor_id, token, n, entries, plan


def _check_chunk_header(body: dict, n, spec: RecordSpec, max_records: int) -> tuple:
    if not (_is_int(n) and n >= 1):
        raise WireError("bad_header", f"n {str(n)[:40]} is not an int >= 1")
    if n > max_records:
        raise WireError("oversize", f"{n} records > max_records {max_records}")
    entries = _tensor_list(body["fields"], "fields")
    fields = _spec_fields(spec)
    names = {name for name, _, _ in entries}
    if names != fields.keys():
        raise WireError("bad_fields", f"missing {sorted(fields.keys() - names)}, "
                                      f"unexpected {sorted(names - fields.keys())}")
    for name, dtype, shape in entries:
        if dtype != fields[name].dtype:
            raise WireError("bad_dtype", f"{name}: {dtype}, expected {fields[name].dtype}")
        if shape != fields[name].shape:
            raise WireError("bad_shape", f"{name}: per-record shape {shape}, expected {fields[name].shape}")
    return tuple(entries)


# An actor sends the same header bytes with every chunk (its id, chunk size and fields), and
# parsing and checking them costs about as much as copying the records: valid headers are
# remembered (errors are raised again, never cached). Only short ones, so memory stays bounded.
_CACHED_HEADER_BYTES = 4096
_cached_chunk_header = functools.lru_cache(maxsize=1024)(_parse_chunk_header)


def _checked_episodes(episodes, n: int) -> list[dict]:
    """``episodes`` if they are a list of at most ``n`` (one per record) well-formed episodes,
    else WireError (bad_body): what a chunk of ``n`` records may carry."""
    if not _episodes(episodes):
        raise WireError("bad_body", f"the chunk's episodes are not a list of {list(_EPISODE)} with ints "
                                    ">= 0 (versions >= -1) and finite returns")
    if len(episodes) > n:
        raise WireError("bad_body", f"{len(episodes)} episodes end in a chunk of {n} records")
    return episodes


def _chunk_views(text: bytes, views: list, spec: RecordSpec, max_records: int, admit):
    """(header, {name: numpy view [n, *shape] of its frame}) once the header, the sender
    (``admit``), the frame lengths, bool bytes and episodes are checked; record values are not.
    The header holds the chunk's episodes ({"actor_id", "token", "n", "seq", "episodes"})."""
    parse = _cached_chunk_header if len(text) <= _CACHED_HEADER_BYTES else _parse_chunk_header
    (seq,) = _SEQ.unpack_from(views[0], _PREFIX.size)  # _open checked that frame 0 holds it
    try:
        actor_id, token, n, entries, plan = parse(text, spec, max_records)
    except WireError as e:
        if e.sender is not None:  # the receiver may return the sender's credit
            e.sender = (*e.sender, seq)
        raise
    header = {"actor_id": actor_id, "token": token, "n": n, "seq": seq}
    if admit is not None:
        admit(header)  # before any record frame is read
    try:
        ended = views[-1] if len(views) == 2 + len(plan) else None  # the episodes frame
        if ended is not None:
            views = views[:-1]
        if len(views) != 1 + len(plan) or any(len(v) != p[3] for v, p in zip(views[1:], plan)):
            _check_frames(views, entries, (n,))  # raises, naming the first wrong frame
        arrays = {}
        for v, (name, dtype, shape, _, is_bool) in zip(views[1:], plan):
            array = np.ndarray(shape, dtype, v)  # a view of the frame [n, *shape]: never written
            if is_bool and array.view(np.uint8).max(initial=0) > 1:  # not valid bools
                raise WireError("bad_values", f"{name}: bool bytes must be 0 or 1")
            arrays[name] = array
        header["episodes"] = [] if ended is None else _checked_episodes(
            _loads(ended, "bad_body", "the chunk's episodes frame"), n)
    except WireError as e:
        e.sender = (actor_id, token, seq)  # the receiver may still return the sender's credit
        raise
    return header, arrays


def _chunk(text: bytes, views: list, spec: RecordSpec, max_records: int, admit):
    header, arrays = _chunk_views(text, views, spec, max_records, admit)
    try:
        fields = _spec_fields(spec)
        records = {name: _copy_array(a, fields[name].dtype, (header["n"], *fields[name].shape))
                   for name, a in arrays.items()}
        # every tensor is a fresh [n, *shape] CPU tensor (frame lengths checked above)
        td = unchecked_tensordict(records, header["n"])
        try:
            validate_records(td, spec)
        except RecordError as e:
            raise WireError("bad_values", "; ".join(e.problems)) from None
    except WireError as e:
        e.sender = (header["actor_id"], header["token"], header["seq"])
        raise
    return header, td


def open_chunk(frames: Frames, spec: RecordSpec, *, max_records: int = DEFAULT_MAX_RECORDS,
               admit=None) -> tuple[dict, dict[str, np.ndarray]]:
    """``decode_chunk`` without the copy and the record checks: ({"actor_id", "token", "n", "seq", "episodes"},
    {field: numpy view [n, *shape] of its frame, never to be written}) or WireError. Everything about the
    frames is checked (header, sender, lengths, bool bytes); the caller checks the values
    (``mouse.records.value_problems``, continuity) and copies the views once, into storage,
    before the frames are released. Fields come in the header's order."""
    _, text, views = _open_kind(frames, ("chunk",), "open_chunk")
    return _chunk_views(text, views, spec, max_records, admit)


def decode_chunk(frames: Frames, spec: RecordSpec, *, max_records: int = DEFAULT_MAX_RECORDS,
                 admit=None) -> tuple[dict, TensorDict]:
    """({"actor_id", "token", "n", "seq", "episodes"}, validated TensorDict[n]) or WireError (``admit``:
    see above). The episodes are well formed; whether they fit the spec is the caller's
    (``mouse.records.episode_problems``)."""
    _, text, views = _open_kind(frames, ("chunk",), "decode_chunk")
    return _chunk(text, views, spec, max_records, admit)


_EPISODE_JSON_BYTES = 160  # one episode's entry in a chunk's episodes frame, all numbers at their widest
_HEADER_ALLOWANCE = 1 << 16  # frame 0 of a chunk: ids, token and the field list


def max_frame_bytes(spec: RecordSpec, max_records: int) -> int:
    """The largest frame a valid chunk can have: a field's frame, or its episodes frame (an
    episode ends at a record: at most max_records of them)."""
    record = max(math.prod(fs.shape) * fs.dtype.itemsize for fs in _spec_fields(spec).values())
    return _HEADER_ALLOWANCE + max_records * max(record, _EPISODE_JSON_BYTES)


# --- weights --------------------------------------------------------------------------------

def encode_weights(version: int, state_dict: dict[str, torch.Tensor], *, incarnation: str) -> list:
    """Frames of a versioned state dict of learner ``incarnation`` (tensors moved to CPU; no pickle)."""
    if not _version(version) or not _incarnation(incarnation):
        raise ValueError(f"weights version must be an int in [0, 2**53] and incarnation "
                         f"{INCARNATION_HEX} hex digits, got {version!r}, {incarnation!r}")
    entries, frames = [], []
    for name, t in state_dict.items():
        t = _plain_tensor(name, t)
        entries.append([name, _DTYPE_NAME[t.dtype], list(t.shape)])
        frames.append(_raw(t))
    header = {"version": version, "incarnation": incarnation, "tensors": entries}
    return [_header("weights", header), *frames]


def _weights(body: dict, views: list) -> tuple[int, str, dict[str, torch.Tensor]]:
    _check_keys(body, {"version", "incarnation", "tensors"}, "bad_header", "weights header")
    version, incarnation = body["version"], body["incarnation"]
    if not (_version(version) and _incarnation(incarnation)):
        raise WireError("bad_header", f"version {str(version)[:40]} is not an int in [0, 2**53] or "
                                      f"incarnation {str(incarnation)[:40]} not {INCARNATION_HEX} hex digits")
    entries = _tensor_list(body["tensors"], "tensors")
    _check_frames(views, entries, ())
    return version, incarnation, {name: _copy_tensor(v, name, dtype, shape)
                                  for v, (name, dtype, shape) in zip(views[1:], entries)}


def decode_weights(frames: Frames) -> tuple[int, str, dict[str, torch.Tensor]]:
    """(version, incarnation, CPU state dict) or WireError."""
    kind, text, views = _open_kind(frames, ("weights",), "decode_weights")
    return _weights(_parse(kind, text), views)


# --- control --------------------------------------------------------------------------------

def _nonneg_int(x) -> bool:
    return _is_int(x) and 0 <= x <= MAX_VERSION


def _version(x) -> bool:
    return _is_int(x) and 0 <= x <= MAX_VERSION


def _policy_version(x) -> bool:
    return _is_int(x) and -1 <= x <= MAX_VERSION  # -1: before the first weights


def _hex(x, digits: int) -> bool:
    return type(x) is str and len(x) == digits and all(c in "0123456789abcdef" for c in x)


def _token(x) -> bool:
    return _hex(x, TOKEN_HEX)


def _incarnation(x) -> bool:
    return _hex(x, INCARNATION_HEX)


def _text(x) -> bool:
    return type(x) is str and len(x) <= MAX_TEXT


def _number(x) -> bool:
    return type(x) is int or (type(x) is float and math.isfinite(x))


def _counter(key: str, x) -> bool:
    low = -1 if key == "version" else 0
    return _number(x) and low <= x <= MAX_VERSION


def _counters(x) -> bool:
    return (isinstance(x, dict) and len(x) <= len(HEARTBEAT_COUNTERS)
            and all(k in HEARTBEAT_COUNTERS and _counter(k, v) for k, v in x.items()))


def _ints_within(column: tuple, low: int) -> bool:
    return set(map(type, column)) == {int} and low <= min(column) and max(column) <= MAX_VERSION


def _numbers(column: tuple) -> bool:
    if set(map(type, column)) == {float}:
        return all(map(math.isfinite, column))
    return all(map(_number, column))


# an episode's fields and the check of each field's column (over all of a message's episodes):
# stream_id and length as _nonneg_int, return as _number, policy_version as _policy_version
_EPISODE = {"stream_id": lambda c: _ints_within(c, 0), "return": _numbers,
            "length": lambda c: _ints_within(c, 0), "policy_version": lambda c: _ints_within(c, -1)}

_episode_columns = operator.itemgetter(*_EPISODE)


def _episodes(x) -> bool:
    """The ``_EPISODE`` checks, a column at a time in C-level loops (map, min, max): a chunk's
    episodes frame holds dozens to hundreds of short episodes, and per-episode Python calls
    cost more than encoding them."""
    if not isinstance(x, list):
        return False
    if not (all(map(isinstance, x, itertools.repeat(dict)))
            and all(map(_EPISODE.keys().__eq__, map(dict.keys, x)))):
        return False
    columns = zip(*map(_episode_columns, x)) if x else ()
    return all(check(column) for check, column in zip(_EPISODE.values(), columns))


CONTROL_SCHEMAS = {
    "hello": {"actor_id": lambda x: _is_int(x) and -1 <= x <= MAX_VERSION,
              "token": lambda x: x == "" or _token(x), "pid": _nonneg_int, "host": _text,
              "version": _policy_version},
    "heartbeat": {"actor_id": _nonneg_int, "token": _token, "counters": _counters},
    "bye": {"actor_id": _nonneg_int, "token": _token},
    "stop": {"version": _version, "incarnation": _incarnation, "reason": _text,
             "refused": lambda x: type(x) is bool, "received": _nonneg_int},
    "welcome": {"actor_id": _nonneg_int, "token": _token, "incarnation": _incarnation,
                "config": lambda x: isinstance(x, dict), "credits": _nonneg_int},
    "ack": {"version": _version, "incarnation": _incarnation, "credits": _nonneg_int, "received": _nonneg_int},
    "rejoin": {"incarnation": _incarnation, "reason": _text},
}


def _check_body(kind: str, body) -> dict:
    schema = CONTROL_SCHEMAS[kind]
    if not isinstance(body, dict):
        raise WireError("bad_body", f"{kind} body must be a dict")
    _check_keys(body, schema.keys(), "bad_body", f"{kind} body")
    bad = [key for key, ok in schema.items() if not ok(body[key])]
    if bad:
        raise WireError("bad_body", f"{kind} body: wrong type or value for {bad}")
    return body


def encode_control(kind: str, body: dict) -> list[bytes]:
    """One frame; the body is checked like the receiver will (WireError bad_kind/bad_body)."""
    if kind not in CONTROL_SCHEMAS:
        raise WireError("bad_kind", f"{kind!r} is not a control kind {sorted(CONTROL_SCHEMAS)}")
    return [_header(kind, _check_body(kind, body))]


def _control(kind: str, body: dict, views: list) -> dict:
    if len(views) > 1:
        raise WireError("too_many_frames", f"{kind} is one frame, got {len(views)}")
    return _check_body(kind, body)


def decode_control(frames: Frames) -> tuple[str, dict]:
    """(kind, body) of a control message or WireError."""
    kind, text, views = _open_kind(frames, CONTROL_SCHEMAS, "decode_control")
    return kind, _control(kind, _parse(kind, text), views)


# --- any message ----------------------------------------------------------------------------

def peek_kind(frames: Frames) -> str | None:
    """The kind named by a well-formed prefix of frame 0, else None (nothing else is checked)."""
    try:
        head = _byte_view(frames[0], 0)
        magic, version, code = _PREFIX.unpack_from(head)
    except (WireError, TypeError, IndexError, KeyError, struct.error):
        return None
    return _KIND_BY_CODE.get(code) if magic == MAGIC and version == WIRE_VERSION else None


def is_weights(frames: Frames) -> bool:
    return peek_kind(frames) == "weights"


def decode(frames: Frames, spec: RecordSpec | None = None, *,
           max_records: int = DEFAULT_MAX_RECORDS, admit=None) -> Message:
    """Decode and validate any message; chunks are accepted only when ``spec`` is given."""
    kind, text, views = _open(frames)
    if kind == "chunk" and spec is not None:
        header, td = _chunk(text, views, spec, max_records, admit)
        return Message(kind, header, records=td)
    body = _parse(kind, text)
    if kind == "chunk":
        _expect_kind(kind, (), "a decoder without a RecordSpec")
    if kind == "weights":
        version, incarnation, tensors = _weights(body, views)
        return Message(kind, {"version": version, "incarnation": incarnation}, tensors=tensors)
    return Message(kind, _control(kind, body, views))
