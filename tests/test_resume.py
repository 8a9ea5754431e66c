"""A FrozenLake run (dqn acting, sp distilled from q_star) that stops and resumes, in one process.

What a user reads after each start must describe the whole run: both heads
evaluated, best weights kept, wall time and best evaluation carried over, the
same W&B run continued, and the resume's changes on record.
"""

from __future__ import annotations

import json

import pytest

from learner import room
from learner.checkpoint import load_checkpoint
from learner.eval_run import eval_run
from learner.learner import Learner
from learner.wandb_files import history, run_files
from mouse.cli import parse_run_config
from mouse.components import build_model
from mouse.config import RunConfig, from_dict, load_config
from mouse.envs import describe_env
from mouse.launch import InprocRun
from tests.run_helpers import small_run_flags

pytestmark = pytest.mark.timeout(300)
FLAGS = ("--env.env-id", "FrozenLake-v1", "--train.sp.weight", "1", "--num-actors", "1",
         "--eval.episodes", "16")


def run(run_dir, *flags) -> dict:
    cfg = parse_run_config(["--run-dir", str(run_dir), *small_run_flags(2, wandb="offline"), *map(str, flags)])
    r = InprocRun(cfg)
    summary = r.run()
    import wandb

    wandb.teardown()  # the W&B service writes the offline run file for good when it shuts down
    assert not [e for e in r.actor_results.values() if isinstance(e, BaseException)], r.actor_results
    return summary


def test_a_run_resumed_reports_the_whole_run(tmp_path, monkeypatch):
    d = tmp_path / "run"
    s1 = run(d, *FLAGS, "--budget.max-env-steps", 1500)
    # every head that acts was evaluated; the actors' head (dqn) is the one eval/return reports
    assert set(s1["best_eval_by_head"]) == {"dqn", "sp"} and s1["eval_head"] == "dqn"
    assert s1["best_eval_return"] == s1["best_eval_by_head"]["dqn"]
    assert s1["solved_return"] == 0.7  # FrozenLake-v1's registered reward_threshold, not 475
    assert len(run_files(d)) == 1
    keys = set().union(*history(d))
    for k in ("eval/sp/return", "eval/dqn/return", "eval/sp/success_rate", "eval/success_rate",
              "eval/sp/q_star_agreement", "eval/dqn/q_star_agreement", "eval/return"):
        assert k in keys, (k, sorted(keys))
    # best.pt: the weights of the best evaluation, usable without the learner
    best = load_checkpoint(d / "best.pt")
    assert best["eval_return"] == s1["best_eval_return"] and best["env_steps"] <= s1["env_steps"]
    cfg = from_dict(RunConfig, best["config"])
    build_model(cfg, describe_env(cfg.env)).load_state_dict(best["model"])
    m = eval_run(d, episodes=8, head="sp")
    assert 0 <= m["success_rate"] <= 1 and 0 <= m["q_star_agreement"] <= 1

    # the resume: no model or env flags (they come from the run directory), a larger budget
    s2 = run(d, "--budget.max-env-steps", s1["env_steps"] + 1500)
    assert s2["env_steps"] >= s1["env_steps"] + 1500 and s2["updates"] > s1["updates"]
    assert s2["wall_minutes"] > s1["wall_minutes"]  # all starts together
    assert s2["best_eval_return"] >= s1["best_eval_return"]  # kept from the checkpoint
    assert set(s2["best_eval_by_head"]) == {"dqn", "sp"}
    starts = [json.loads(x) for x in (d / "config-history.jsonl").read_text().splitlines()]
    assert [h["resume"] for h in starts] == [False, True]
    assert starts[1]["changed"] == {"budget.max_env_steps": [1500, s1["env_steps"] + 1500],
                                     "eval.episodes": [16, 2]}  # small_run_flags' value
    # the same W&B run, continued: two offline directories of one run id
    runs = [f.parent.name for f in run_files(d)]  # offline-run-<time>-<id>
    assert len(runs) == 2 and {r.rsplit("-", 1)[1] for r in runs} == {(d / "wandb-id").read_text().strip()}

    # a week later, on a node with less room than the replay needs: a resume cannot lower its
    # capacity (the checkpoint and replay were made with it), so it is told to go where it fits
    cfg = load_config(d / "config.json")
    tight = (cfg.replay.capacity * 10, "of memory available on this node (MemAvailable)")  # < 69 B a record
    monkeypatch.setattr(room, "memory_room", lambda: tight)
    with pytest.raises(ValueError, match="a resumed run keeps its replay settings: resume it on a node or job "
                                         "with more memory$"):
        Learner(cfg, d)
    with pytest.raises(ValueError, match=r"lower --replay.capacity \(at most about"):
        Learner(cfg, tmp_path / "new")  # a new run may lower it
