"""Every throughput benchmark still runs to its table: each one, in its own process, with
arguments small enough for seconds. Its figures are not checked (a benchmark asserts no
time); that it runs and prints its summary line is, so a change elsewhere cannot leave a
benchmark broken until someone needs its numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.run_helpers import mouse_env

ROOT = Path(__file__).resolve().parents[1]

# benchmark, tiny arguments, a line its output must hold
RUNS = {
    "bench_wire": (["--chunks", "60", "--rounds", "1"], "goal: ingest / raw >= 0.8"),
    "bench_ingest_ceiling": (["--kinds", "cartpole", "--seconds", "0.05", "--rounds", "1"],
                             "the ratio is the ceiling of any ingest"),
    "bench_actor": (["--num-envs", "8", "--steps", "20", "--rounds", "1"], "goals: actor loop >= 0.50x env"),
    "bench_scale": (["--kinds", "cartpole", "--actors", "1", "--seconds", "0.5", "--settle", "0.2",
                     "--no-training-row"], "actors one learner can feed"),
    "bench_publish": (["--hidden", "32", "--turn-publishes", "2", "--rounds", "1", "--subscribers", "1"],
                      "publisher thread (after)"),
    "bench_train_step": (["--seconds", "0.3", "--warmup", "1", "--batch", "8", "--seq", "4",
                          "--device", "cpu"], "updates/s"),
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", sorted(RUNS))
def test_benchmark_runs_to_its_table(name, tmp_path):
    args, expected = RUNS[name]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args], cwd=tmp_path,
                         env=mouse_env("WARNING"), capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stderr[-3000:]
    assert expected in out.stdout, out.stdout[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
