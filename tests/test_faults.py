"""Faults, for real: bad input to a running learner, dying and early actors, Ctrl-C, bad set-ups.

Every test runs `mouse` processes over real sockets (no mocks); every process
is bounded by a timeout and killed, with its children, when the test ends.
"""

import collections
import itertools
import json
import os
import signal
import struct
from types import SimpleNamespace

import pytest
import torch
import zmq

from mouse import wire
from mouse.components import build_model
from mouse.replay import make_replay_buffer
from mouse.config import EnvConfig, RunConfig, from_dict, load_config
from mouse.envs import describe_env
from mouse.transport import endpoints, free_port_base
from mouse.status import read_status
from tests.run_helpers import (NUM_ENVS, SMALL, Proc, actor_children, alive, cmdline, procs,  # noqa: F401
                                 read_summary, stream_records, wait_for)

START_S = 120  # generous: another job may be using both cores while torch imports
RUN_S = 180


def log_text(path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def status(path) -> dict:
    """The status file at ``path`` ({} before the program has written one)."""
    return read_status(path) or {}


def load_checkpoint_model(path):
    """The checkpoint loads with weights_only=True into a model built from its own config."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = from_dict(RunConfig, state["config"])
    build_model(cfg, describe_env(cfg.env)).load_state_dict(state["model"])
    return state


# --- 1. malformed and foreign messages sent to a running learner ------------------------------

BAD_ACTOR = 77  # joins with a hello (a session of its own), then sends nothing but faults
BAD_STREAM = BAD_ACTOR * NUM_ENVS  # its own stream; the real actor 0 owns streams 0 .. NUM_ENVS-1
REPLAY_CAPACITY = 4096
MAX_RECORDS = 8 * NUM_ENVS  # SMALL's chunk: 8 steps of NUM_ENVS streams
# sent last on each socket: a socket delivers in order, so once the learner has logged the
# rejection of both marks it has handled everything sent before them
END_MARKS = {"records": b"END-R", "control": b"END-C"}
HOSTILE_BUDGET = 2000
INCARNATION = "0123456789abcdef"


def _prefix(kind="chunk", version=wire.WIRE_VERSION, magic=wire.MAGIC, code=None) -> bytes:
    return struct.pack("<5sHB", magic, version, wire.KIND_CODES[kind] if code is None else code)


def _raw_control(kind: str, body: dict) -> list[bytes]:
    """A control message as a peer that skips encode_control's checks would send it."""
    return [_prefix(kind) + json.dumps(body).encode()]


def bad_messages(spec, token: str) -> list[tuple[str, str, list, str]]:
    """(socket, what, frames, the reason the learner must count) for every fault we inject;
    ``token`` is the session token the learner gave BAD_ACTOR."""
    numbers = itertools.count()  # BAD_ACTOR's chunks, numbered in the order they are sent

    def chunk(td, actor_id=BAD_ACTOR, tok=token, seq=None, episodes=None):  # no spec: no sender-side check
        return [bytes(f) for f in wire.encode_chunk(td, actor_id, tok, next(numbers) if seq is None else seq,
                                                    episodes=episodes)]

    good = stream_records(spec, 16, BAD_STREAM)
    ok = chunk(good, seq=0)  # sent only where no sender is read from it (its number is not taken)
    nan, gap, f64, no_field, wide, huge, late = (good.clone() for _ in range(7))
    nan["reward"][5] = float("nan")
    gap["time"][8:] += 1  # time 7 is followed by 9: a step is missing
    f64["reward"] = good["reward"].double()
    del no_field["xformed_reward"]
    wide[spec.obs_key] = torch.zeros(16, spec.obs_shape[0] + 1)
    huge[spec.obs_key][3, 0] = 3e38  # finite, but it would overflow the loss
    late["policy_version"][:] = 2**62
    foreign = good.clone()
    foreign["stream_id"][:] = 0  # the real actor's stream, with BAD_ACTOR's own token
    weights = [bytes(f) for f in wire.encode_weights(5, {"w": torch.zeros(3)}, incarnation=INCARNATION)]
    garbage = [b"\x00\xffnot a mouse message"]
    body = ok[0][len(_prefix()):]  # the chunk header's JSON
    episode = {"stream_id": BAD_STREAM, "return": 1.0, "length": 2, "policy_version": 0}
    return [
        ("records", "garbage bytes", garbage, "bad_magic"),
        ("records", "one empty frame", [b""], "bad_magic"),
        ("records", "wrong magic", [b"MOUZE" + ok[0][5:], *ok[1:]], "bad_magic"),
        ("records", "next wire version", [_prefix(version=wire.WIRE_VERSION + 1) + body, *ok[1:]],
         "bad_version"),
        ("records", "unknown kind code", [_prefix(code=200) + body, *ok[1:]], "bad_kind"),
        ("records", "frame 0 shorter than its prefix", [wire.MAGIC + b"\x01"], "bad_header"),
        ("records", "header not JSON", [_prefix() + b"{not json", *ok[1:]], "bad_header"),
        ("records", "NaN reward", chunk(nan), "bad_values"),
        ("records", "a step missing in a stream", chunk(gap), "bad_values"),
        ("records", "an observation of 3e38", chunk(huge), "bad_values"),
        ("records", "policy version 2**62", chunk(late), "bad_values"),
        ("records", "reward as float64", chunk(f64), "bad_dtype"),
        ("records", "no xformed_reward field", chunk(no_field), "bad_fields"),
        ("records", "obs one wider than the env's", chunk(wide), "bad_shape"),
        ("records", "last frame truncated", [*(c := chunk(good))[:-1], c[-1][:-3]], "bad_length"),
        ("records", "last frame missing", chunk(good)[:-1], "missing_frames"),
        ("records", "one frame too many", [*ok, b"[]", bytes(8)], "too_many_frames"),
        ("records", "100,000 empty frames", [b""] * 100_000, "too_many_frames"),
        ("records", f"{MAX_RECORDS + 1} records (more than a chunk holds)",
         chunk(stream_records(spec, MAX_RECORDS + 1, BAD_STREAM)), "oversize"),
        ("records", "actor 0's stream without actor 0's token", chunk(good, 0, seq=0), "bad_token"),
        ("records", "actor 0's stream with BAD_ACTOR's token", chunk(foreign), "foreign_streams"),
        ("records", "hello on the records socket",
         wire.encode_control("hello", {"actor_id": BAD_ACTOR, "token": "", "pid": 1, "host": "intruder",
                                       "version": -1}), "bad_kind"),
        ("records", "weights on the records socket", weights, "bad_kind"),
        ("records", "an episode without a length",
         [*chunk(good), json.dumps([{"stream_id": BAD_STREAM, "return": 1.0, "policy_version": 0}]).encode()],
         "bad_body"),
        ("records", "an episode return of 1e300", chunk(good, episodes=[{**episode, "return": 1e300}]),
         "bad_values"),
        ("records", "actor 0's episodes", chunk(good, episodes=[{**episode, "stream_id": 0}]),
         "foreign_streams"),
        ("records", "wire 3's episode message (kind 5)", [_prefix(code=5) + json.dumps(
            {"actor_id": BAD_ACTOR, "token": token, "episodes": [episode]}).encode()], "bad_kind"),
        ("control", "garbage bytes", garbage, "bad_magic"),
        ("control", "an ack", wire.encode_control("ack", {"version": 1, "incarnation": INCARNATION,
                                                          "credits": 100, "received": 0}), "bad_kind"),
        ("control", "a stop", wire.encode_control("stop", {"version": 1, "incarnation": INCARNATION,
                                                           "reason": "x", "refused": False, "received": 0}),
         "bad_kind"),
        ("control", "wire 3's episode message (kind 5)", [_prefix(code=5) + json.dumps(
            {"actor_id": BAD_ACTOR, "token": token, "episodes": []}).encode()], "bad_kind"),
        ("control", "a chunk", ok, "too_many_frames"),
        ("control", "weights", weights, "too_many_frames"),
        ("control", "hello with an extra key",
         _raw_control("hello", {"actor_id": -1, "token": "", "pid": 1, "host": "intruder", "version": -1,
                                "admin": True}), "bad_body"),
        ("control", "hello for id 5000 (over learner.max_actors)",
         wire.encode_control("hello", {"actor_id": 5000, "token": "", "pid": 2, "host": "intruder",
                                       "version": -1}), "hello_refused"),
        ("control", "heartbeat with a huge counter",
         _raw_control("heartbeat", {"actor_id": BAD_ACTOR, "token": token, "counters": {"env_steps": 10**30}}),
         "bad_body"),
        ("control", "heartbeat for actor 0 without its token",
         wire.encode_control("heartbeat", {"actor_id": 0, "token": token, "counters": {}}), "bad_token"),
        ("control", "heartbeat in two frames",
         [*wire.encode_control("heartbeat", {"actor_id": BAD_ACTOR, "token": token, "counters": {}}), b"x"],
         "too_many_frames"),
        *[(where, "end marker", [mark], "bad_magic") for where, mark in END_MARKS.items()],
    ]


def hostile_join(dealer) -> str:
    """Say hello as BAD_ACTOR; the session token of the welcome."""
    dealer.send_multipart(wire.encode_control("hello", {"actor_id": BAD_ACTOR, "token": "", "pid": 1,
                                                        "host": "intruder", "version": -1}))
    assert dealer.poll(30_000), "no welcome for the hostile actor"
    kind, body = wire.decode_control(dealer.recv_multipart())
    assert kind == "welcome", (kind, body)
    return body["token"]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A learner (2000-step budget) that gets every bad message, then one real actor to finish it.

    The actor starts only once the learner's status file counts every rejection, so the budget
    cannot end before every bad message is counted.
    """
    tmp = tmp_path_factory.mktemp("hostile")
    run_dir, port = tmp / "run", free_port_base()
    spec = describe_env(EnvConfig()).spec
    started, socks, ctx = [], [], zmq.Context()
    try:
        learner = Proc("learner", [
            "learner", "--run-dir", run_dir, "--learner.port", port, *SMALL,
            "--replay.capacity", REPLAY_CAPACITY, "--learner.save-replay",
            "--budget.max-env-steps", HOSTILE_BUDGET, "--budget.max-minutes", 2], tmp)
        started.append(learner)
        wait_for(lambda: status(run_dir / "status.json").get("state") == "running", START_S,
                 "the learner to run", [learner])
        ep = endpoints(f"tcp://127.0.0.1:{port}")
        push, dealer = ctx.socket(zmq.PUSH), ctx.socket(zmq.DEALER)
        socks += [push, dealer]
        push.connect(ep.records)
        dealer.connect(ep.control)
        messages = bad_messages(spec, hostile_join(dealer))
        for where, _, frames, _ in messages:
            (push if where == "records" else dealer).send_multipart(frames)
        expected = dict(collections.Counter(reason for *_, reason in messages))
        wait_for(lambda: status(run_dir / "status.json").get("rejected") == expected, 60,
                 "the learner to count every bad message", [learner])
        actor = Proc("actor", ["actor", "--learner", f"tcp://127.0.0.1:{port}", "--actor-id", 0], tmp)
        started.append(actor)
        code = learner.exit_code(RUN_S)
        yield SimpleNamespace(run_dir=run_dir, learner=learner, actor=actor, code=code,
                              actor_code=actor.exit_code(30), messages=messages)
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        for p in started:
            p.kill_group()


def test_learner_finishes_its_budget_despite_bad_messages(hostile_run):
    r = hostile_run
    assert r.code == 0, r.learner.logs()
    assert "== mouse run finished ==" in r.learner.out()
    assert "Traceback" not in r.learner.err() and "ingest thread failed" not in r.learner.err()
    s = read_summary(r.run_dir)
    assert s["env_steps"] >= HOSTILE_BUDGET and s["updates"] > 0, s
    assert r.actor_code == 0, r.actor.logs()
    load_checkpoint_model(r.run_dir / "checkpoint.pt")


def test_every_bad_message_is_counted_by_its_reason(hostile_run):
    expected = collections.Counter(reason for *_, reason in hostile_run.messages)
    assert read_summary(hostile_run.run_dir)["rejected"] == dict(expected)
    assert "rejected messages" in hostile_run.learner.out()  # the printed summary shows them too


def test_no_bad_record_reaches_the_replay(hostile_run):
    """The replay saved at shutdown holds exactly the real actor's records, all finite."""
    s = read_summary(hostile_run.run_dir)
    cfg = load_config(hostile_run.run_dir / "config.json")
    replay = make_replay_buffer(cfg.replay, describe_env(cfg.env).spec, seq_len=cfg.train.seq_len)
    replay.restore(hostile_run.run_dir / "replay")
    assert len(replay) == s["env_steps"] < REPLAY_CAPACITY  # nothing overwritten: all of it is here
    rows = replay.storage[:]
    assert sorted(rows["stream_id"].unique().tolist()) == list(range(NUM_ENVS))
    assert torch.isfinite(rows["reward"]).all() and torch.isfinite(rows[replay.spec.obs_key]).all()
    assert BAD_STREAM not in s["streams_seen"] and set(range(NUM_ENVS)) <= set(s["streams_seen"])


def test_a_refused_chunk_leaves_no_trace(hostile_run):
    s = read_summary(hostile_run.run_dir)
    assert s["streams_seen"] == list(range(NUM_ENVS)), "a refused chunk's stream was booked"
    assert s["actors_seen"] == [0, BAD_ACTOR], "a refused hello or chunk booked an actor"
    assert s["actor_versions"][str(BAD_ACTOR)] == -1  # none of its records counted


# --- 2. an actor that dies -----------------------------------------------------------------

def test_learner_outlives_a_killed_actor(tmp_path, procs):
    """Actor 1 is SIGKILLed as soon as it has joined. The learner notices it is gone, goes on
    training on actor 0's records, and stops cleanly when told to. The run has no env-step
    budget: actor 0 alone can stream thousands of steps before actor 1 is in (they start,
    and so join, at their own pace), so a budget would race the kill."""
    run_dir, port = tmp_path / "run", free_port_base()
    address = f"tcp://127.0.0.1:{port}"
    st = [tmp_path / f"actor-{i}.status.json" for i in (0, 1)]
    learner_status = run_dir / "status.json"
    actors = [procs(f"actor-{i}", ["actor", "--learner", address, "--actor-id", i, "--status-file", st[i]])
              for i in (0, 1)]
    wait_for(lambda: all(status(p).get("state") == "connecting" for p in st), START_S,
             "both actors to wait for the learner", actors)
    learner = procs("learner", ["learner", "--run-dir", run_dir, "--learner.port", port, *SMALL,
                                "--learner.actor-timeout-s", 3,
                                "--budget.max-env-steps", 0, "--budget.max-minutes", 3])
    wait_for(lambda: status(st[1]).get("state") == "running", START_S, "actor 1 to join",
             [learner, *actors])
    wait_for(lambda: status(learner_status).get("actors_connected") == 2, START_S,
             "the learner to count both actors", [learner, *actors])
    os.kill(actors[1].pid, signal.SIGKILL)
    assert actors[1].popen.wait(10) == -signal.SIGKILL

    wait_for(lambda: status(learner_status).get("actors_connected") == 1, RUN_S,
             "the learner to notice actor 1 is gone", [learner, actors[0]])
    after = status(learner_status)["env_steps"]
    wait_for(lambda: status(learner_status).get("env_steps", 0) >= after + 1000
             and status(learner_status).get("updates", 0) > 0, RUN_S,
             "actor 0's records to keep coming in", [learner, actors[0]])
    os.kill(learner.pid, signal.SIGTERM)

    assert learner.wait(RUN_S) == 0, learner.logs() + actors[0].logs()
    assert actors[0].wait(30) == 0, actors[0].logs()
    assert status(st[0])["stop_reason"] == "the learner asked to stop"
    assert "Traceback" not in learner.err()
    s = read_summary(run_dir)
    assert s["stop_reason"] == f"signal {int(signal.SIGTERM)}"
    assert s["env_steps"] >= after + 1000 and s["updates"] > 0, s
    assert s["actors_seen"] == [0, 1]
    state = load_checkpoint_model(run_dir / "checkpoint.pt")
    assert (state["updates"], state["version"], state["env_steps"]) == \
        (s["updates"], s["weights_version"], s["env_steps"])


# --- 3. an actor started before its learner ---------------------------------------------------

def waiting_actor(tmp_path, procs, port: int):
    """Actor 0 started before its learner, once it waits: (its Proc, its status file)."""
    st = tmp_path / "actor.status.json"
    actor = procs("actor", ["actor", "--learner", f"tcp://127.0.0.1:{port}", "--actor-id", 0,
                            "--status-file", st])
    wait_for(lambda: status(st).get("state") == "connecting", START_S, "the actor to wait", [actor])
    return actor, st


def test_actor_started_before_the_learner_joins_it(tmp_path, procs):
    run_dir, port = tmp_path / "run", free_port_base()
    actor, st = waiting_actor(tmp_path, procs, port)
    learner = procs("learner", ["learner", "--run-dir", run_dir, "--learner.port", port, *SMALL,
                                "--budget.max-env-steps", 3000, "--budget.max-minutes", 2])
    assert learner.wait(RUN_S) == 0, learner.logs() + actor.logs()
    assert actor.wait(30) == 0, actor.logs()
    s = read_summary(run_dir)
    assert s["actors_seen"] == [0]
    assert s["streams_seen"] == list(range(NUM_ENVS))
    assert s["actor_versions"]["0"] > 0, s["actor_versions"]  # it acted with trained weights
    assert s["rejected"] == {}
    assert status(st)["state"] == "stopped" and status(st)["stop_reason"] == "the learner asked to stop"


def test_an_actor_that_joins_as_the_learner_stops_is_told_to_stop(tmp_path, procs):
    """SIGTERM as soon as the actor runs, before it has sent a record (its first chunk takes
    seconds here): the learner waits for it too. (An actor drops the replies it has not read when
    the connection closes: a learner that only told it and left would leave it waiting for ever.)"""
    run_dir, port = tmp_path / "run", free_port_base()
    actor, st = waiting_actor(tmp_path, procs, port)
    learner = procs("learner", ["learner", "--run-dir", run_dir, "--learner.port", port, *SMALL,
                                "--actor.chunk-steps", 20_000, "--budget.max-env-steps", 0,
                                "--budget.max-minutes", 3])
    wait_for(lambda: status(st).get("state") == "running", START_S, "the actor to join", [learner, actor])
    assert status(run_dir / "status.json").get("env_steps", 0) == 0
    os.kill(learner.pid, signal.SIGTERM)
    assert learner.wait(RUN_S) == 0, learner.logs()
    assert actor.wait(30) == 0, actor.logs()
    assert status(st)["stop_reason"] == "the learner asked to stop"
    assert read_summary(run_dir)["stop_reason"] == f"signal {int(signal.SIGTERM)}"


# --- 4. Ctrl-C ------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["process group", "learner only"])
def test_sigint_stops_a_run_cleanly(tmp_path, procs, target):
    """Ctrl-C in a terminal signals the whole process group; `kill -INT` only the learner."""
    run_dir = tmp_path / "run"
    run = procs("run", ["run", "--run-dir", run_dir, "--learner.port", 0, "--num-actors", 2, *SMALL,
                        "--budget.max-env-steps", 0, "--budget.max-minutes", 3])
    logs = [run_dir / f"actor-{i}.log" for i in range(2)]
    st = [run_dir / f"actor-{i}.status.json" for i in range(2)]
    wait_for(lambda: all(status(p).get("state") == "running" for p in st), START_S, "both actors", [run])
    pids = actor_children(run.pid)
    assert set(pids) == {0, 1}, pids
    commands = {pid: cmdline(pid) for pid in pids.values()}
    wait_for(lambda: status(run_dir / "status.json").get("updates", 0) > 0, RUN_S, "the first updates", [run])

    (os.killpg if target == "process group" else os.kill)(run.pid, signal.SIGINT)
    code = run.wait(60)
    assert code == 0, run.logs()  # the learner handles SIGINT and returns normally (130 is only
    # for a Ctrl-C before its handler is installed, mouse.cli)
    assert "Traceback" not in run.err()
    s = read_summary(run_dir)
    assert s["stop_reason"] == f"signal {int(signal.SIGINT)}"
    assert status(run_dir / "status.json")["state"] == "finished"
    state = load_checkpoint_model(run_dir / "checkpoint.pt")
    assert state["updates"] == s["updates"] > 0
    left = [pid for pid in commands if alive(pid) and cmdline(pid) == commands[pid]]
    assert not left, f"actor processes still running: {left}"
    for path, st_path in zip(logs, st):
        assert "Traceback" not in log_text(path), log_text(path)[-2000:]
        actor = status(st_path)
        assert actor["state"] == "stopped", actor  # it stopped by itself, not killed by the launcher
        if target == "learner only":  # the actors did not get the signal: the learner told them
            assert actor["stop_reason"] == "the learner asked to stop", actor
        else:
            assert actor["stop_reason"] in ("the learner asked to stop", f"signal {int(signal.SIGINT)}")


# --- 5. clear errors at start -----------------------------------------------------------------

START_ERRORS = {  # case: (extra flags, what the one-line error must name)
    "unknown env id": (["--env.env-id", "NoSuchEnv-v0"], "env.env_id: cannot make env 'NoSuchEnv-v0'"),
    "bad env kwargs": (["--env.env-id", "FrozenLake-v1", "--env.env-kwargs", '{"map": "8x8"}'],
                       "env.env_kwargs: 'FrozenLake-v1' does not accept"),
    "continuous actions": (["--env.env-id", "Pendulum-v1"], "needs Discrete actions"),
    "sp without q_star": (["--train.sp.weight", "1"], "no exact q_star"),
    "unwritable run dir": ([], "is not writable"),
    "port in use": ([], "cannot bind"),
}


@pytest.fixture(scope="module")
def start_errors(tmp_path_factory):
    """Run every START_ERRORS case as `mouse learner`, all at once (each pays torch's import)."""
    tmp = tmp_path_factory.mktemp("start-errors")
    (tmp / "a-file").write_text("not a directory")
    busy_port = free_port_base()
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.ROUTER)  # another learner's control socket, as far as anyone can tell
    squatter.bind(f"tcp://127.0.0.1:{busy_port + 1}")
    started, run_dirs = {}, {}
    try:
        for case, (flags, _) in START_ERRORS.items():
            run_dir = tmp / "a-file" / "run" if case == "unwritable run dir" else tmp / case.replace(" ", "-")
            run_dirs[case] = run_dir
            port = busy_port if case == "port in use" else free_port_base()
            # a case that wrongly starts ends by itself in seconds rather than training for 20 minutes
            started[case] = Proc(case.replace(" ", "-"), [
                "learner", "--run-dir", run_dir, "--learner.port", port, *SMALL,
                "--budget.max-minutes", 0.05, *flags], tmp)
        yield {case: SimpleNamespace(proc=p, code=p.exit_code(START_S), busy_port=busy_port,
                                     run_dir=run_dirs[case]) for case, p in started.items()}
    finally:
        squatter.close(0)
        ctx.term()
        for p in started.values():
            p.kill_group()


@pytest.mark.parametrize("case", list(START_ERRORS))
def test_bad_setup_is_one_clear_error(start_errors, case):
    r, expected = start_errors[case], START_ERRORS[case][1]
    err = r.proc.err()
    assert r.code == 1, r.proc.logs()
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, err[-3000:]
    if case == "port in use":
        assert f"127.0.0.1:{r.busy_port + 1}" in last
    assert "mouse run finished" not in r.proc.out()
    assert not r.run_dir.exists(), "a failed start left its run directory behind"
