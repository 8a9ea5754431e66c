"""benchmarks/learning.py reads a run's metrics.jsonl right: the first evaluation >= 475, the
minutes of its weights, the evaluations after it (a hand-made file in the learner's format)."""

from __future__ import annotations

import json

from benchmarks.learning import cartpole_table, read_metrics, returns_near, stability


def write_run(path, evals):
    """Log lines every 10 s at 1,000 env steps/s, and an evaluation (env steps, return) logged
    after the line that follows its weights, as the learner does."""
    lines, pending = [], list(evals)
    for i in range(1, 31):
        steps = i * 10_000
        lines.append({"step": i, "time": 1e9 + 10 * i, "perf/env_steps": steps, "perf/elapsed_s": 10.0 * i})
        while pending and pending[0][0] <= steps:
            s, ret = pending.pop(0)
            lines.append({"step": i, "time": 1e9 + 10 * i + 1, "eval/return": ret, "eval/env_steps": s})
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (path / "metrics.jsonl").write_text(text + '{"step": 31, "time": ')  # a line still being written


def test_first_solve_minutes_and_the_evaluations_after_it(tmp_path):
    write_run(tmp_path, [(45_000, 200.0), (85_000, 480.0), (125_000, 500.0), (165_000, 470.0),
                         (205_000, 500.0), (245_000, 500.0), (285_000, 500.0), (295_000, 20.0)])
    rows = read_metrics(tmp_path)
    st = stability(rows)
    assert st["env_steps"] == 85_000
    assert abs(st["minutes"] - 85.0 / 60) < 1e-9  # interpolated between the lines at 80k and 90k
    assert st["next"] == [500.0, 470.0, 500.0, 500.0, 500.0]  # not the solving one, not the 6th
    assert st["decided"] and not st["stays"]  # 470 < 475
    assert stability(rows, after=3)["next"] == [500.0, 470.0, 500.0]
    assert returns_near(rows, every=100_000) == [(100_000, 480.0), (200_000, 470.0)]


def test_undecided_and_unsolved_runs_and_the_median(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_run(tmp_path / "a", [(45_000, 490.0), (85_000, 500.0)])
    write_run(tmp_path / "b", [(45_000, 100.0)])
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert stability(a) == {"env_steps": 45_000, "minutes": 0.75, "next": [500.0], "decided": False,
                            "stays": False}
    assert stability(b) is None
    out = cartpole_table([(0, a, None), (1, b, None)]).splitlines()
    assert out[1].split()[:4] == ["0", "45,000", "0.75", "500"] and "(1 evals only)" in out[1]
    assert "not reached" in out[2]
    assert out[3].split()[:5] == ["median", "45,000", "0.75", "-", "0/2"]
