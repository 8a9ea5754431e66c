"""The whole system in one process: a real learner and real actors as threads over inproc://.

Same wire format, sockets (ZeroMQ inproc), replay, model and train step as the
process runs; seconds instead of a minute. The process tests (test_e2e.py,
test_faults.py) keep what needs processes: signals, kills, real TCP.
"""

from __future__ import annotations

import threading

import pytest
import torch

from learner.checkpoint import load_checkpoint
from mouse.cli import parse_run_config
from mouse.components import build_model
from mouse.config import RunConfig, from_dict
from mouse.envs import describe_env
from mouse.launch import InprocRun
from mouse.status import read_status
from tests.run_helpers import small_run_flags

pytestmark = pytest.mark.timeout(240)
NUM_ENVS = 3


def config(run_dir, *flags) -> RunConfig:
    return parse_run_config(["--run-dir", str(run_dir), "--num-actors", "2",
                              *small_run_flags(NUM_ENVS), *map(str, flags)])


def run(cfg: RunConfig) -> tuple[dict, InprocRun]:
    r = InprocRun(cfg)
    summary = r.run()
    assert not [e for e in r.actor_results.values() if isinstance(e, BaseException)], r.actor_results
    return summary, r


def test_inproc_run_end_to_end(tmp_path):
    cfg = config(tmp_path / "run", "--budget.max-env-steps", 3000)
    s, r = run(cfg)
    assert s["stop_reason"] == "budget: 3,000 env steps reached"
    assert s["actors_seen"] == [0, 1]
    assert s["streams_seen"] == list(range(2 * NUM_ENVS))
    assert s["env_steps"] >= 3000 and s["rejected"] == {}
    # the learner trained at the replay ratio, published, and the actors acted with its weights
    ratio = cfg.learner.replay_ratio
    assert 0 < s["updates"] <= ratio * s["env_steps"] + 1
    assert s["weights_version"] >= s["updates"] // cfg.learner.publish_every
    assert all(v > 0 for v in s["actor_versions"].values()), s["actor_versions"]
    # every actor ran until the learner told it to stop, and counted what it sent
    assert sorted(r.actor_results) == [0, 1]
    # nothing lost: the learner stored every record the actors made (one reset record per stream
    # plus one per stream and vector step)
    assert sum(c["env_steps"] for c in r.actor_results.values()) + 2 * NUM_ENVS == s["env_steps"]
    assert {a.stop_reason for a in r.actors} == {"the learner asked to stop"}
    # the status file a supervisor reads says the same
    status = read_status(cfg.run_dir + "/status.json")
    assert status["state"] == "finished" and status["updates"] == s["updates"]
    assert status["env_steps"] == s["env_steps"] and status["streams_seen"] == s["streams_seen"]
    # the checkpoint loads into a model built from its own config
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    cfg2 = from_dict(RunConfig, state["config"])
    build_model(cfg2, describe_env(cfg2.env)).load_state_dict(state["model"])
    assert (state["updates"], state["version"], state["env_steps"]) == \
        (s["updates"], s["weights_version"], s["env_steps"])


def test_resume_keeps_weights_counters_and_replay(tmp_path):
    flags = ("--learner.save-replay", "--replay.capacity", 20_000)
    s1, _ = run(config(tmp_path / "run", "--budget.max-env-steps", 1500, *flags))
    ckpt1 = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    # the same budget again would end at once and replace summary.json: refused, nothing written
    summary1 = (tmp_path / "run" / "summary.json").read_text()
    with pytest.raises(ValueError, match="has finished.*raise --budget.max-env-steps"):
        run(config(tmp_path / "run", "--budget.max-env-steps", 1500, *flags))
    assert (tmp_path / "run" / "summary.json").read_text() == summary1
    s2, r2 = run(config(tmp_path / "run", "--budget.max-env-steps", s1["env_steps"] + 1500, *flags))
    assert s2["updates"] > s1["updates"] and s2["weights_version"] > s1["weights_version"]
    assert s2["env_steps"] >= s1["env_steps"] + 1500
    # the replay holds the first run's steps (restored) and the second's: nothing was lost
    assert len(r2.learner.replay) == s2["env_steps"]
    # the second learner started from the first one's weights, not from a fresh init
    fresh = build_model(r2.learner.cfg, r2.learner.info)
    name = next(k for k in ckpt1["model"] if k.startswith("embed"))
    assert not torch.equal(fresh.state_dict()[name], ckpt1["model"][name])


def test_actor_started_before_the_learner_joins_it(tmp_path):
    cfg = config(tmp_path / "run", "--budget.max-env-steps", 2000, "--num-actors", 0)
    r = InprocRun(cfg)
    r.start_actor(0)  # connects and says hello before anything is bound
    threading.Event().wait(0.5)
    s = r.run()
    assert s["actors_seen"] == [0] and s["streams_seen"] == list(range(NUM_ENVS))
    assert s["actor_versions"]["0"] > 0
    assert r.actor_results[0]["env_steps"] + NUM_ENVS == s["env_steps"]


def test_stop_from_another_thread_ends_the_run_cleanly(tmp_path):
    cfg = config(tmp_path / "run", "--budget.max-env-steps", 0, "--budget.max-minutes", 2)
    r = InprocRun(cfg)
    stopper = threading.Timer(0.0, lambda: None)

    def stop_when_training():
        status = read_status(tmp_path / "run" / "status.json")
        if status and status["updates"] > 0:
            r.stop("test says stop")
        else:
            nonlocal stopper
            stopper = threading.Timer(0.2, stop_when_training)
            stopper.start()

    stop_when_training()
    s = r.run()
    stopper.cancel()
    assert s["stop_reason"] == "test says stop" and s["updates"] > 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["updates"] == s["updates"]
    assert all(not t.is_alive() for t in r.threads)
