"""metrics.jsonl (learner.monitor) and `mouse plot` (learner.plot)."""

from __future__ import annotations

import json
import struct

import pytest

from learner.monitor import METRICS_FILE, Monitor
from learner.plot import load_metrics, plot_runs, series
from mouse.cli import main as mouse_main, parse_run_config
from mouse.launch import InprocRun
from tests.run_helpers import small_run_flags

pytest.importorskip("matplotlib", reason="matplotlib not installed: the plot extra, pip install 'mouse[plot]'")


def fake_run(run_dir, slope: float, wandb_mode: str = "disabled", rows: int = 12) -> None:
    """A run's metrics as the learner logs them: training rows, and an eval row every third."""
    cfg = parse_run_config(["--run-dir", str(run_dir), "--wandb.mode", wandb_mode])
    run_dir.mkdir(parents=True)
    monitor = Monitor(cfg, run_dir)
    for i in range(rows):
        steps = 1000 * (i + 1)
        monitor.log({"perf/env_steps": steps, "perf/updates": 10 * i, "perf/env_steps_per_s": 900 + i,
                     "perf/updates_per_s": 90.0, "perf/batch_wait_fraction": 0.01, "actors/policy_lag": 2.0,
                     "episode/return": slope * i, "loss/total": 1.0 / (i + 1),
                     "loss/dqn/dqn_loss": 1.0 / (i + 1), "loss/grad_norm": 3.0}, step=10 * i)
        if i % 3 == 2:
            monitor.log({"eval/return": slope * i + 1, "eval/env_steps": steps}, step=10 * i)
    monitor.finish()
    if wandb_mode != "disabled":  # the W&B service writes the run file for good when it shuts down
        import wandb

        wandb.teardown()


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_monitor_writes_one_flushed_line_per_log(tmp_path):
    cfg = parse_run_config(["--run-dir", str(tmp_path), "--wandb.mode", "disabled"])
    monitor = Monitor(cfg, tmp_path)
    monitor.log({"loss/total": 0.5, "perf/env_steps": 100}, step=3)
    # readable before the monitor closes: a crashed learner still leaves its curves
    (row,) = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert row["step"] == 3 and row["loss/total"] == 0.5 and row["perf/env_steps"] == 100
    assert row["time"] > 1.7e9
    monitor.log({"eval/return": 7.0}, step=4)
    monitor.finish()
    rows = load_metrics(tmp_path)
    assert [r["step"] for r in rows] == [3, 4] and rows[1]["eval/return"] == 7.0


def test_a_line_cut_short_is_skipped(tmp_path):
    (tmp_path / METRICS_FILE).write_text('{"step": 1, "time": 10, "eval/return": 2}\n{"step": 2, "ti')
    rows = load_metrics(tmp_path)
    assert len(rows) == 1 and series(rows, "eval/return", "step") == ([1.0], [2.0])


def test_series_pairs_x_and_y_of_the_same_rows():
    rows = [{"time": 100.0, "step": 0, "perf/env_steps": 10},
            {"time": 160.0, "step": 5, "eval/return": 3.0, "eval/env_steps": 8},
            {"time": 220.0, "step": 9, "eval/return": float("nan"), "eval/env_steps": 20}]
    assert series(rows, "eval/return", "eval/env_steps") == ([8.0], [3.0])
    assert series(rows, "eval/return", "minutes") == ([1.0], [3.0])  # since the first row
    assert series(rows, "perf/env_steps", "step") == ([0.0], [10.0])


def test_plot_two_runs(tmp_path):
    fake_run(tmp_path / "a", slope=2.0)
    fake_run(tmp_path / "b", slope=-1.0)
    # through the command, as a user runs it
    mouse_main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")])
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["losses.png", "returns.png", "throughput.png"]
    for name in names:
        width, height = png_size(tmp_path / "out" / name)
        assert 600 <= width <= 2000 and 300 <= height <= 2000, (name, width, height)


def test_plot_reads_offline_wandb_files_without_metrics_jsonl(tmp_path):
    fake_run(tmp_path / "old", slope=1.0, wandb_mode="offline", rows=6)
    (tmp_path / "old" / METRICS_FILE).unlink()  # a run from before metrics.jsonl
    rows = load_metrics(tmp_path / "old")
    assert series(rows, "eval/return", "eval/env_steps") == ([3000.0, 6000.0], [3.0, 6.0])
    assert series(rows, "episode/return", "step")[0] == [0, 10, 20, 30, 40, 50]
    paths = plot_runs([tmp_path / "old"])
    assert [p.parent for p in paths] == [tmp_path / "old" / "plots"] * 3


@pytest.mark.timeout(240)
def test_a_real_run_logs_its_curves(tmp_path):
    cfg = parse_run_config(["--run-dir", str(tmp_path / "run"), "--num-actors", "1", *small_run_flags(2),
                            "--budget.max-env-steps", "1500"])
    summary = InprocRun(cfg).run()
    rows = load_metrics(tmp_path / "run")
    # one row per log interval and one per evaluation (the final one), at the learner's update count
    assert rows[-1]["step"] <= summary["updates"] and all(r["time"] > 0 for r in rows)
    xs, ys = series(rows, "eval/return", "eval/env_steps")
    assert ys[-1] == pytest.approx(summary["final_eval_return"]) and xs[-1] <= summary["env_steps"]
    assert series(rows, "loss/total", "step")[0] and series(rows, "perf/env_steps_per_s", "minutes")[0]
    # the run's last interval is logged however short the run: no update's losses are lost
    last = [r for r in rows if "perf/updates" in r][-1]
    assert last["perf/updates"] == summary["updates"] == last["step"]
    assert len(plot_runs([tmp_path / "run"])) == 3


def test_plot_errors_name_the_run(tmp_path):
    (tmp_path / "empty").mkdir()
    for missing in ("empty", "nowhere"):
        with pytest.raises(SystemExit, match=missing):
            mouse_main(["plot", str(tmp_path / missing)])
