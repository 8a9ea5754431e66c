"""The wire format: round trips (in memory and over real ZeroMQ sockets) and every rejection."""

import json
import math
import random
import struct
import warnings

import pytest
import torch
import zmq
from tensordict import TensorDict

from mouse import wire
from mouse.records import RecordSpec
from mouse.wire import WireError

OBS = {"continuous": (4,), "discrete": (), "image": (3, 5, 2)}
A = 4
TOKEN = "0123456789abcdef" * 2  # a session token (wire.TOKEN_HEX hex digits)
INC = "fedcba9876543210"  # a learner incarnation (wire.INCARNATION_HEX hex digits)


def make_spec(kind="continuous", q_star=False, action_mask=False) -> RecordSpec:
    return RecordSpec(kind, OBS[kind], A, q_star=q_star, action_mask=action_mask)


def make_records(spec: RecordSpec, streams: int = 3, steps: int = 6, seed: int = 0) -> TensorDict:
    """Valid records, step-major like a vector env: stream j's episode ends at time 3, then resets."""
    g = torch.Generator().manual_seed(seed)
    time = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 4][:steps]).repeat_interleave(streams)  # [N]
    n = len(time)
    done = ((time == 3) & (torch.arange(n) < 4 * streams)).long()
    first = time == 0
    td = spec.empty(n)
    obs = td[spec.obs_key]
    if spec.obs_kind == "continuous":
        obs.copy_(torch.randn(obs.shape, generator=g))
    else:
        obs.copy_(torch.randint(0, 200, obs.shape, generator=g))
    td["action"] = torch.randint(0, A, (n,), generator=g).masked_fill(first, 0)
    td["reward"] = torch.randn(n, generator=g).masked_fill(first, 0.0)
    td["xformed_reward"] = td["reward"] * 0.5
    td["done"], td["time"] = done, time
    td["stream_id"] = (torch.arange(n) % streams) + 10
    td["policy_version"] = torch.full((n,), 7)
    if spec.q_star:
        q = torch.randn(n, A, generator=g)
        q[:, -1] = -math.inf  # an invalid action must survive the trip
        td["q_star"] = q
    if spec.action_mask:
        td["action_mask"][:, :-1] = True
    return td


def as_bytes(frames) -> list[bytes]:
    return [bytes(f) for f in frames]


def assert_same(a: TensorDict, b: TensorDict):
    assert set(a.keys()) == set(b.keys())
    for k in a.keys():
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# --- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(OBS))
@pytest.mark.parametrize("q_star", [False, True])
@pytest.mark.parametrize("action_mask", [False, True])
def test_chunk_round_trip(kind, q_star, action_mask):
    spec = make_spec(kind, q_star, action_mask)
    td = make_records(spec)
    header, out = wire.decode_chunk(wire.encode_chunk(td, 5, TOKEN, 2**64 - 1, spec=spec), spec)
    assert header == {"actor_id": 5, "token": TOKEN, "n": td.batch_size[0], "seq": 2**64 - 1, "episodes": []}
    assert_same(out, td)
    if q_star:
        assert torch.all(out["q_star"][:, -1] == -math.inf)


def test_chunk_round_trip_over_zmq_without_warnings():
    spec = make_spec("image", q_star=True, action_mask=True)
    chunks = [make_records(spec, seed=i) for i in range(3)]
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for i, td in enumerate(chunks):
                push.send_multipart(wire.encode_chunk(td, i, TOKEN, i), copy=i % 2 == 0)
            push.send_multipart(wire.encode_weights(3, {"w": torch.arange(6.0).reshape(2, 3)}, incarnation=INC),
                                copy=False)
            assert pull.poll(5000)
            for i, td in enumerate(chunks):
                frames = pull.recv_multipart(copy=False)  # zmq.Frame, read in place
                header, out = wire.decode_chunk(frames, spec)
                _, views = wire.open_chunk(frames, spec)  # numpy views of the frames
                assert all(torch.equal(torch.from_numpy(views[k].copy()), td[k]) for k in views)
                read_only = [memoryview(f.bytes) for f in frames]  # what a received frame may be
                assert read_only[1].readonly
                assert_same(wire.decode_chunk(read_only, spec)[1], td)
                assert header["actor_id"] == i
                assert_same(out, td)
                out["reward"].add_(1.0)  # decoded tensors own writable memory
            msg = wire.decode(pull.recv_multipart(copy=False), spec)
            assert msg.kind == "weights" and msg.body == {"version": 3, "incarnation": INC}
            assert torch.equal(msg.tensors["w"], torch.arange(6.0).reshape(2, 3))
            for cut in (truncate(as_bytes(wire.encode_chunk(chunks[0], 0, TOKEN, 0)), 2),
                        as_bytes(wire.encode_weights(3, {"w": torch.ones(2, 3)}, incarnation=INC))[:1] + [b"x"]):
                push.send_multipart(cut)
                with pytest.raises(WireError) as e:  # a frame's length, read from the zmq.Frame
                    wire.decode(pull.recv_multipart(copy=False), spec)
                assert e.value.reason == "bad_length"
    finally:
        push.close(0), pull.close(0), ctx.term()


def test_weights_round_trip_exact():
    state = {
        "lin.weight": torch.randn(3, 5),
        "lin.weight_t": torch.randn(5, 3).t(),  # non-contiguous
        "half": torch.randn(4).half(),
        "bf16": torch.randn(2, 2).bfloat16(),
        "f64": torch.randn(3).double(),
        "steps": torch.tensor(12345678901, dtype=torch.int64),  # 0-dim int buffer
        "mask": torch.tensor([True, False, True]),
        "bytes": torch.arange(7, dtype=torch.uint8),
        "empty": torch.zeros(0, 4),
        "needs_grad": torch.nn.Parameter(torch.ones(2)),
    }
    version, incarnation, out = wire.decode_weights(as_bytes(wire.encode_weights(9, state, incarnation=INC)))
    assert (version, incarnation) == (9, INC) and list(out) == list(state)
    for k, t in state.items():
        assert out[k].dtype == t.dtype and out[k].shape == t.shape and not out[k].requires_grad
        assert torch.equal(out[k], t.detach()), k
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    clone = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    clone.load_state_dict(wire.decode_weights(wire.encode_weights(0, model.state_dict(), incarnation=INC))[2])
    for (k, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        assert torch.equal(a, b), k


CONTROL = {
    "hello": {"actor_id": -1, "token": "", "pid": 1234, "host": "node-1", "version": -1},
    "heartbeat": {"actor_id": 2, "token": TOKEN, "counters": {"env_steps": 100, "send_blocked_s": 0.25,
                                                              "version": -1}},
    "bye": {"actor_id": 2, "token": TOKEN},
    "stop": {"version": 7, "incarnation": INC, "reason": "the learner is stopping", "refused": False,
             "received": 3},
    "welcome": {"actor_id": 3, "token": TOKEN, "incarnation": INC,
                "config": {"env": {"env_id": "CartPole-v1"}, "num_actors": 2}, "credits": 4},
    "ack": {"version": 7, "incarnation": INC, "credits": 12, "received": 4},
    "rejoin": {"incarnation": INC, "reason": "no session for actor 2 here"},
}


@pytest.mark.parametrize("kind", list(CONTROL))
def test_control_round_trip(kind):
    frames = wire.encode_control(kind, CONTROL[kind])
    assert len(frames) == 1
    assert wire.decode_control(frames) == (kind, CONTROL[kind])
    msg = wire.decode(frames)
    assert (msg.kind, msg.body, msg.records, msg.tensors) == (kind, CONTROL[kind], None, None)


HEARTBEAT = CONTROL["heartbeat"]
BAD_BODIES = [
    ("hello", {k: v for k, v in CONTROL["hello"].items() if k != "host"}),
    ("hello", {**CONTROL["hello"], "actor_id": -2}),
    ("hello", {**CONTROL["hello"], "actor_id": "2"}),
    ("hello", {**CONTROL["hello"], "actor_id": 2**62}),  # ids are bounded (the learner's range is smaller)
    ("hello", {**CONTROL["hello"], "pid": True}),  # JSON booleans are not ints
    ("hello", {**CONTROL["hello"], "host": "h" * (wire.MAX_TEXT + 1)}),
    ("hello", {**CONTROL["hello"], "token": "not-a-token"}),
    ("hello", {**CONTROL["hello"], "version": 2**53 + 1}),
    ("heartbeat", {**HEARTBEAT, "counters": {"env_steps": "1"}}),
    ("heartbeat", {**HEARTBEAT, "counters": {"x": 1}}),  # only the fixed counter names
    ("heartbeat", {**HEARTBEAT, "counters": {"env_steps": 10**30}}),  # bounded values
    ("heartbeat", {**HEARTBEAT, "counters": {"send_blocked_s": -1.0}}),
    ("heartbeat", {**HEARTBEAT, "counters": {"env_steps": math.nan}}),
    ("heartbeat", {**HEARTBEAT, "extra": 0}),
    ("heartbeat", {k: v for k, v in HEARTBEAT.items() if k != "token"}),
    ("heartbeat", {**HEARTBEAT, "token": TOKEN.upper()}),
    ("bye", {"actor_id": -1, "token": TOKEN}),
    ("bye", {"actor_id": 1}),
    ("bye", []),
    ("stop", {**CONTROL["stop"], "refused": 1}),
    ("stop", {k: v for k, v in CONTROL["stop"].items() if k != "incarnation"}),
    ("welcome", {**CONTROL["welcome"], "config": "not a dict"}),
    ("welcome", {**CONTROL["welcome"], "incarnation": INC[:-1]}),
    ("ack", {**CONTROL["ack"], "version": 1.5}),
    ("ack", {**CONTROL["ack"], "version": 2**53 + 1}),
    ("ack", {**CONTROL["ack"], "credits": -1}),
    ("rejoin", {"incarnation": INC}),
    ("bye", {"actor_id": 1, 5: 2, "x": 3}),  # mixed key types are reported, not a TypeError
]


@pytest.mark.parametrize("kind,body", BAD_BODIES)
def test_control_rejects_bad_bodies(kind, body):
    with pytest.raises(WireError) as e:  # the sender refuses to encode it...
        wire.encode_control(kind, body)
    assert e.value.reason == "bad_body"
    if isinstance(body, dict) and all(isinstance(k, str) for k in body):  # ...and so does the receiver
        frames = [struct.pack("<5sHB", b"MOUSE", wire.WIRE_VERSION, wire.KIND_CODES[kind])
                  + json.dumps(body).encode()]
        with pytest.raises(WireError) as e:
            wire.decode_control(frames)
        # NaN is not even JSON for us
        assert e.value.reason in ("bad_body", "bad_header")


def test_control_kind_and_frame_errors():
    with pytest.raises(WireError, match="bad_kind"):
        wire.encode_control("chunk", {})
    with pytest.raises(WireError, match="too_many_frames"):
        wire.decode_control(CONTROL_FRAMES + [b""])
    with pytest.raises(WireError, match="bad_kind"):
        wire.decode_control(wire.encode_weights(1, {}, incarnation=INC))
    assert wire.is_weights(wire.encode_weights(1, {}, incarnation=INC)) and not wire.is_weights(CONTROL_FRAMES)
    assert wire.peek_kind([b"junk"]) is None and wire.peek_kind([]) is None


CONTROL_FRAMES = wire.encode_control("bye", {"actor_id": 1, "token": TOKEN})


# --- rejections -----------------------------------------------------------------------------

SPEC = make_spec("continuous", q_star=True, action_mask=True)


SEQ = 7  # good_frames' chunk number


def good_frames(td=None) -> list[bytes]:
    return as_bytes(wire.encode_chunk(make_records(SPEC) if td is None else td, 1, TOKEN, SEQ))


def body_start(frame0: bytes) -> int:
    """Where frame 0's JSON starts: after the prefix, and after a chunk's seq."""
    return 16 if frame0[7:8] == b"\x01" else 8


def header_of(frames) -> dict:
    return json.loads(frames[0][body_start(frames[0]):])


def with_header(frames, body, version=wire.WIRE_VERSION, code=1) -> list[bytes]:
    seq = struct.pack("<Q", SEQ) if code == 1 else b""
    return [struct.pack("<5sHB", b"MOUSE", version, code) + seq + json.dumps(body).encode(), *frames[1:]]


def fields_index(frames, name) -> int:
    return [f[0] for f in header_of(frames)["fields"]].index(name)


def drop_field(frames, name):
    h, i = header_of(frames), fields_index(frames, name)
    del h["fields"][i]
    return with_header(frames[: i + 1] + frames[i + 2:], h)


def add_field(frames):
    h = header_of(frames)
    h["fields"].append(["foo", "float32", []])
    return with_header(frames + [bytes(4 * h["n"])], h)


def retype(frames, name, dtype, shape, itemsize):
    h, i = header_of(frames), fields_index(frames, name)
    h["fields"][i] = [name, dtype, shape]
    out = with_header(frames, h)
    out[i + 1] = bytes(max(0, h["n"] * itemsize * math.prod(shape)))  # length consistent with the lie
    return out


def set_header(frames, **changes):
    return with_header(frames, {**header_of(frames), **changes})


def truncate(frames, i, nbytes=1):
    return frames[:i] + [frames[i][:-nbytes]] + frames[i + 1:]


def corrupt(**changes):
    """Frames of records with some fields overwritten (the encoder does not validate)."""
    td = make_records(SPEC)
    for key, fn in changes.items():
        fn(td[key])
    return good_frames(td)


MALFORMED = {
    "bad_magic": lambda f: [b"MOUSX" + f[0][5:], *f[1:]],
    "bad_magic/empty_frame": lambda f: [b"", *f[1:]],
    "bad_version": lambda f: with_header(f, header_of(f), version=wire.WIRE_VERSION + 1),
    "bad_kind": lambda f: with_header(f, header_of(f), code=99),
    "bad_kind/weights_to_decode_chunk": lambda f: as_bytes(wire.encode_weights(1, {}, incarnation=INC)),
    "bad_kind/control_to_decode_chunk": lambda f: CONTROL_FRAMES,
    "bad_header/invalid_json": lambda f: [f[0][:16] + b'{"actor_id": 1, "n": ', *f[1:]],
    "bad_header/not_utf8": lambda f: [f[0][:16] + b"\xff\xfe", *f[1:]],
    "bad_header/json_array": lambda f: [f[0][:16] + b"[1, 2]", *f[1:]],
    "bad_header/nan_literal": lambda f: [f[0][:16] + f[0][16:].replace(b'"n":18', b'"n":NaN'), *f[1:]],
    "bad_header/short_prefix": lambda f: [b"MOUSE\x01", *f[1:]],
    "bad_header/short_seq": lambda f: [f[0][:12], *f[1:]],  # the prefix and half a seq
    "bad_header/missing_n": lambda f: with_header(f, {k: v for k, v in header_of(f).items() if k != "n"}),
    "bad_header/extra_key": lambda f: set_header(f, extra=1),
    "bad_header/negative_actor": lambda f: set_header(f, actor_id=-3),
    "bad_header/no_token": lambda f: with_header(f, {k: v for k, v in header_of(f).items() if k != "token"}),
    "bad_header/short_token": lambda f: set_header(f, token=TOKEN[:-1]),
    "bad_header/token_not_hex": lambda f: set_header(f, token="z" * wire.TOKEN_HEX),
    "bad_header/n_zero": lambda f: set_header(f, n=0),
    "bad_header/n_float": lambda f: set_header(f, n=18.0),
    "bad_header/fields_not_list": lambda f: set_header(f, fields={"reward": "float32"}),
    "bad_fields/missing": lambda f: drop_field(f, "reward"),
    "bad_fields/extra": lambda f: add_field(f),
    "bad_fields/duplicate": lambda f: set_header(f, fields=header_of(f)["fields"] + [["done", "int64", []]]),
    "bad_dtype/wrong": lambda f: retype(f, "reward", "float64", [], 8),
    "bad_dtype/unknown": lambda f: retype(f, "reward", "complex32", [], 4),
    "bad_shape/wrong": lambda f: retype(f, "obs_continuous", "float32", [5], 4),
    "bad_shape/negative": lambda f: retype(f, "obs_continuous", "float32", [-4], 4),
    "bad_length/truncated": lambda f: truncate(f, 3),
    "bad_length/padded": lambda f: f[:2] + [f[2] + b"\0"] + f[3:],
    "missing_frames": lambda f: f[:-1],
    "missing_frames/header_only": lambda f: f[:1],
    "too_many_frames": lambda f: f + [b"[]", b""],  # (one more frame: its episodes)
    "oversize/header": lambda f: [f[0] + b" " * wire.MAX_HEADER_BYTES, *f[1:]],
    "bad_values/nan_reward": lambda f: corrupt(reward=lambda x: x.__setitem__(5, math.nan)),
    "bad_values/inf_reward": lambda f: corrupt(xformed_reward=lambda x: x.__setitem__(5, math.inf)),
    "bad_values/inf_obs": lambda f: corrupt(obs_continuous=lambda x: x.__setitem__((2, 1), -math.inf)),
    "bad_values/nan_obs": lambda f: corrupt(obs_continuous=lambda x: x.__setitem__((0, 0), math.nan)),
    "bad_values/posinf_q_star": lambda f: corrupt(q_star=lambda x: x.__setitem__((4, 0), math.inf)),
    "bad_values/nan_q_star": lambda f: corrupt(q_star=lambda x: x.__setitem__((4, 2), math.nan)),
    "bad_values/done_3": lambda f: corrupt(done=lambda x: x.__setitem__(4, 3)),
    "bad_values/done_negative": lambda f: corrupt(done=lambda x: x.__setitem__(4, -1)),
    "bad_values/action_range": lambda f: corrupt(action=lambda x: x.__setitem__(4, A)),
    "bad_values/skipped_step": lambda f: corrupt(time=lambda x: x.__setitem__(7, 5)),  # stream 11: 1 -> 5
    "bad_values/bool_byte": lambda f: f[:-1] + [b"\x02" + f[-1][1:]],  # action_mask is last
    "bad_values/policy_version_huge": lambda f: corrupt(policy_version=lambda x: x.__setitem__(3, 2**53 + 1)),
    "bad_values/policy_version_negative": lambda f: corrupt(policy_version=lambda x: x.__setitem__(3, -2)),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_rejects_malformed_chunk(case):
    frames = MALFORMED[case](good_frames())
    with pytest.raises(WireError) as e:
        wire.decode_chunk(frames, SPEC)
    assert e.value.reason == case.split("/")[0], e.value.detail
    if not case.startswith("bad_kind/"):  # (the dispatcher accepts every kind)
        with pytest.raises(WireError) as e2:
            wire.decode(frames, SPEC)
        assert e2.value.reason == e.value.reason


def test_good_frames_decode_and_corruptions_are_real():
    """Guards the table above: the unmodified chunk passes, so each failure is the mutation's."""
    frames = good_frames()
    assert wire.decode_chunk(frames, SPEC)[1].batch_size == (18,)
    assert header_of(frames)["n"] == 18 and fields_index(frames, "action_mask") == len(frames) - 2


def test_oversize_records():
    frames = good_frames()
    assert wire.decode_chunk(frames, SPEC, max_records=18)[0]["n"] == 18
    with pytest.raises(WireError) as e:
        wire.decode_chunk(frames, SPEC, max_records=17)
    assert e.value.reason == "oversize"


def test_repeated_headers_decode_like_new_ones():
    """Valid chunk headers are remembered (an actor sends the same one every time): no answer changes."""
    frames = good_frames()
    header, a = wire.decode_chunk(frames, SPEC)
    header["n"] = 0  # the caller's header dict is its own
    header, b = wire.decode_chunk(frames, SPEC)
    assert header == {"actor_id": 1, "token": TOKEN, "n": 18, "seq": SEQ, "episodes": []}
    a["reward"].add_(1.0)  # and so is every decoded tensor
    assert not torch.equal(a["reward"], b["reward"])
    with pytest.raises(WireError) as e:
        wire.decode_chunk(frames, make_spec("discrete"))  # same header bytes, another spec
    assert e.value.reason == "bad_fields"
    padded = [frames[0] + b" " * 5000, *frames[1:]]  # too long to be remembered: decoded each time
    assert_same(wire.decode_chunk(padded, SPEC)[1], b)


def test_chunk_needs_a_spec_and_rejects_nonsense_frames():
    with pytest.raises(WireError, match="bad_kind"):
        wire.decode(good_frames())  # no RecordSpec: chunks are not accepted (e.g. on actors)
    for frames, reason in [([], "missing_frames"), ("MOUSE", "bad_header"), ([123], "bad_header"),
                           (good_frames()[:1] + [object()] + good_frames()[2:], "bad_length")]:
        with pytest.raises(WireError) as e:
            wire.decode(frames, SPEC)
        assert e.value.reason == reason


def test_weights_rejections():
    good = as_bytes(wire.encode_weights(4, {"a": torch.ones(2, 3), "b": torch.zeros(2)}, incarnation=INC))
    h = header_of(good)
    cases = {
        "bad_fields": with_header(good, {**h, "tensors": [h["tensors"][0]] * 2}, code=2),
        "bad_dtype": with_header(good, {**h, "tensors": [["a", "object", [2, 3]], h["tensors"][1]]}, code=2),
        "bad_header": with_header(good, {**h, "version": -1}, code=2),
        "bad_header/version_over_2**53": with_header(good, {**h, "version": 2**53 + 1}, code=2),
        "bad_header/no_incarnation": with_header(good, {k: v for k, v in h.items() if k != "incarnation"}, code=2),
        "bad_length": truncate(good, 2, 4),
        "too_many_frames": good + [b"[]", b"x"],
        "missing_frames": good[:2],
        "bad_shape": with_header(good, {**h, "tensors": [["a", "float32", [2, 3.0]], h["tensors"][1]]},
                                 code=2),
        "bad_shape/overflow": with_header(good, {**h, "tensors": [["a", "bfloat16", [0, 2**31, 2**31]],
                                                                 ["b", "float32", [0, 10**30]]]}, code=2)[:1]
        + [b"", b""],
    }
    for case, frames in cases.items():
        with pytest.raises(WireError) as e:
            wire.decode_weights(frames)
        assert e.value.reason == case.split("/")[0]
    with pytest.raises(WireError, match="bad_kind"):
        wire.decode_weights(good_frames())
    with pytest.raises(ValueError):
        wire.encode_weights(-1, {}, incarnation=INC)
    with pytest.raises(ValueError):
        wire.encode_weights(1, {}, incarnation="not hex")
    with pytest.raises(ValueError):
        wire.encode_weights(1, {"c": torch.zeros(2, dtype=torch.complex64)}, incarnation=INC)


def test_every_reason_is_documented_and_tested():
    tested = {case.split("/")[0] for case in MALFORMED} | {"bad_body"}
    assert tested == set(wire.REASONS)
    for reason in wire.REASONS:
        assert f"    {reason} " in wire.__doc__


# --- fuzz -----------------------------------------------------------------------------------

def random_json(rng: random.Random, depth=0):
    choices = [lambda: rng.randint(-3, 70000), lambda: rng.choice([2**31, 2**64, 10**400]),
               lambda: rng.random(), lambda: None, lambda: True,
               lambda: rng.choice(["", "float32", "bool", "obs_continuous", "reward", "x" * 50])]
    if depth < 3:
        choices += [lambda: [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))],
                    lambda: {rng.choice(["n", "actor_id", "token", "fields", "version", "tensors", "q"]):
                             random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}]
    return rng.choice(choices)()


def mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    frames = list(frames)
    op = rng.randrange(7) if frames else 6
    i = rng.randrange(len(frames)) if frames else 0
    if op == 0:  # flip random bytes anywhere
        f = bytearray(frames[i])
        for _ in range(rng.randint(1, 4)):
            if f:
                f[rng.randrange(len(f))] = rng.randrange(256)
        frames[i] = bytes(f)
    elif op == 1:  # truncate or extend a frame
        frames[i] = frames[i][: rng.randrange(len(frames[i]) + 1)] + bytes(rng.randrange(3))
    elif op == 2 and len(frames) > 1:  # drop, duplicate or swap frames
        j = rng.randrange(len(frames))
        frames[i], frames[j] = frames[j], frames[i]
        if rng.random() < 0.5:
            frames.insert(j, frames[i]) if rng.random() < 0.5 else frames.pop(j)
    elif op == 3 and frames[0][:5] == b"MOUSE":  # replace a header value with random JSON
        start = body_start(frames[0])
        try:
            h = json.loads(frames[0][start:])
        except ValueError:
            h = {}
        if isinstance(h, dict) and h:
            h[rng.choice(list(h))] = random_json(rng)
        frames[0] = frames[0][:start] + json.dumps(h).encode()
    elif op == 4:  # a field entry of the header replaced
        try:
            start = body_start(frames[0])
            h = json.loads(frames[0][start:])
            key = "fields" if "fields" in h else "tensors"
            j = rng.randrange(len(h[key]))
            if rng.random() < 0.5:
                h[key][j] = random_json(rng)
            else:  # keep the entry's form, change its dtype or shape
                dims = [0, 1, 3, 4, 256, 2**31, 2**62, 10**30]
                h[key][j][rng.choice([1, 2])] = (rng.choice(list(wire.DTYPES)) if rng.random() < 0.3 else
                                                 [rng.choice(dims) for _ in range(rng.randint(0, 4))])
            frames[0] = frames[0][:start] + json.dumps(h).encode()
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            pass
    elif op == 5:  # another kind code
        if len(frames[0]) >= 8:
            frames[0] = frames[0][:7] + bytes([rng.randrange(9)]) + frames[0][8:]
    else:  # pure noise
        frames = [rng.randbytes(rng.randrange(40)) for _ in range(rng.randint(0, 4))]
    return frames


def test_fuzz_only_wire_errors():
    rng = random.Random(1234)
    seeds = [
        good_frames(),
        as_bytes(wire.encode_chunk(make_records(make_spec("image")), 0, TOKEN, 0)),
        as_bytes(wire.encode_weights(2, {"w": torch.randn(3, 2), "m": torch.tensor([True, False])},
                                     incarnation=INC)),
        *[wire.encode_control(k, b) for k, b in CONTROL.items()],
    ]
    specs = [SPEC, make_spec("image"), None]
    outcomes = {"ok": 0}
    for _ in range(5000):
        frames = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            frames = mutate(rng, frames)
        try:
            wire.decode(frames, rng.choice(specs))
            outcomes["ok"] += 1
        except WireError as e:
            assert e.reason in wire.REASONS
            outcomes[e.reason] = outcomes.get(e.reason, 0) + 1
    # the fuzz gets past the header into frames, values and successful decodes
    assert {"ok", "bad_header", "bad_fields", "bad_length", "bad_values", "bad_body"} <= outcomes.keys()


# --- the sender check before the frames, and the records port's frame bound ----------------

class Refused(Exception):
    pass


def test_admit_sees_the_header_before_any_record_frame_is_read():
    seen = []

    def admit(header):
        seen.append(header)
        raise Refused

    frames = good_frames()
    truncated = truncate(frames, 3)  # a record frame is wrong: reading it would be bad_length
    with pytest.raises(Refused):
        wire.decode(truncated, SPEC, admit=admit)
    assert seen == [{"actor_id": 1, "token": TOKEN, "n": 18, "seq": SEQ}]
    bad_header = set_header(frames, n=0)
    with pytest.raises(WireError, match="bad_header"):  # a bad header never reaches admit
        wire.decode_chunk(bad_header, SPEC, admit=admit)
    assert len(seen) == 1
    header, td = wire.decode_chunk(frames, SPEC, admit=seen.append)  # admit returning: decoded
    assert header == seen[-1] and td.batch_size == (18,)


def test_wire_errors_name_the_sender_once_its_header_is_read():
    with pytest.raises(WireError) as e:
        wire.decode_chunk(truncate(good_frames(), 3), SPEC)
    assert e.value.sender == (1, TOKEN, SEQ)
    with pytest.raises(WireError) as e:
        wire.decode_chunk([b"junk"], SPEC)
    assert e.value.sender is None


def test_each_chunk_decodes_its_own_seq_behind_one_remembered_header():
    """The seq is outside the JSON an actor repeats: chunks numbered apart share its parse."""
    td = make_records(SPEC)
    for seq in (0, 1, 2**32, 2**64 - 1):
        header, _ = wire.decode_chunk(wire.encode_chunk(td, 1, TOKEN, seq), SPEC)
        assert header["seq"] == seq
    for bad in (-1, 2**64, 1.0, True):
        with pytest.raises(ValueError, match="seq"):
            wire.encode_chunk(td, 1, TOKEN, bad)


def test_max_frame_bytes_holds_every_valid_records_frame():
    spec = make_spec("image", q_star=True, action_mask=True)
    td = make_records(spec, streams=3, steps=6)  # 18 records
    limit = wire.max_frame_bytes(spec, 18)
    frames = as_bytes(wire.encode_chunk(td, 0, TOKEN, 2**64 - 1, spec=spec))
    assert max(map(len, frames)) <= limit
    episodes = [{"stream_id": 2**53, "return": -1.2345678901234567e300, "length": 2**53,
                 "policy_version": 2**53}] * 18  # the widest numbers there are, one per record
    assert len(wire.encode_chunk(td, 0, TOKEN, 0, episodes=episodes)[-1]) <= limit
    assert limit < 2 * wire.max_frame_bytes(spec, 9)  # proportional to the records, not a constant


# --- the episodes a chunk ends -------------------------------------------------------------

EPISODE = {"stream_id": 4, "return": 21.0, "length": 21, "policy_version": 3}


def test_a_chunk_carries_the_episodes_its_records_end():
    spec = make_spec()
    td = make_records(spec)  # 18 records
    plain = wire.encode_chunk(td, 5, TOKEN, 3, spec=spec)
    # int returns (any size: the learner bounds them by max_abs_reward * length) pass beside floats
    episodes = [EPISODE, {**EPISODE, "stream_id": 5, "return": 3}, {**EPISODE, "return": -10**30}]
    ended = wire.encode_chunk(td, 5, TOKEN, 3, spec=spec, episodes=episodes)
    assert len(ended) == len(plain) + 1  # one frame more, the last
    for frames, want in ((plain, []), (ended, episodes)):
        header, out = wire.decode_chunk(as_bytes(frames), spec)
        assert header["episodes"] == want
        assert_same(out, td)
        assert wire.open_chunk(as_bytes(frames), spec)[0]["episodes"] == want
    assert len(wire.encode_chunk(td, 5, TOKEN, 3, episodes=[])) == len(plain)


BAD_EPISODES = {
    "a key missing": [{"stream_id": 4, "return": 1.0, "length": 2}],
    "length -1": [{**EPISODE, "length": -1}],
    "version 2**62": [{**EPISODE, "policy_version": 2**62}],
    "not a list": {"stream_id": 4},
    "more than one per record": [EPISODE] * 19,
    # episodes are checked a column at a time: one bad value among good ones, in each column
    "stream_id true": [EPISODE] * 5 + [{**EPISODE, "stream_id": True}],
    "stream_id -1": [EPISODE] * 5 + [{**EPISODE, "stream_id": -1}],
    "return inf": [EPISODE] * 5 + [{**EPISODE, "return": math.inf}],
    "return a string": [EPISODE] * 5 + [{**EPISODE, "return": "21"}],
    "return NaN": [{**EPISODE, "return": 3}, {**EPISODE, "return": math.nan}],
    "length a float": [EPISODE] * 5 + [{**EPISODE, "length": 2.0}],
    "version -2": [EPISODE] * 5 + [{**EPISODE, "policy_version": -2}],
    "a list, not a dict": [EPISODE] * 5 + [[4, 21.0, 21, 3]],
    "an extra key": [EPISODE] * 5 + [{**EPISODE, "extra": 1}],
}


@pytest.mark.parametrize("what", list(BAD_EPISODES))
def test_bad_episodes_are_refused_by_sender_and_receiver_naming_the_sender(what):
    spec = make_spec()
    td = make_records(spec)  # 18 records
    episodes = BAD_EPISODES[what]
    with pytest.raises(ValueError):  # the sender refuses to encode them...
        wire.encode_chunk(td, 5, TOKEN, 3, episodes=episodes)
    frames = as_bytes(wire.encode_chunk(td, 5, TOKEN, 3)) + [json.dumps(episodes).encode()]
    for decode in (wire.decode_chunk, wire.open_chunk):  # ...and so does the receiver
        with pytest.raises(WireError) as e:
            decode(frames, spec)
        assert (e.value.reason, e.value.sender) == ("bad_body", (5, TOKEN, 3)), e.value
    with pytest.raises(WireError, match="bad_body"):
        wire.open_chunk(as_bytes(wire.encode_chunk(td, 5, TOKEN, 3)) + [b"[not json"], spec)
    with pytest.raises(WireError, match="too_many_frames"):  # one episodes frame at most
        wire.open_chunk(as_bytes(wire.encode_chunk(td, 5, TOKEN, 3, episodes=[EPISODE])) + [b"[]"], spec)


