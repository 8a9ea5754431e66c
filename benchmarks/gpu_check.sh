#!/usr/bin/env bash
# The GPU check: on a CUDA machine, in under 8 minutes, the learner-side figures that need a GPU,
# printed as one table at the end:
#   1. training step (benchmarks/bench_train_step.py): mlp and transformer, B=256 S=16,
#      all four heads vs dqn alone;
#   2. the PrefetchBatchifier feeding a CUDA learner (benchmarks/bench_replay.py --only-train):
#      batches gathered into pinned memory, copied on the workers' own CUDA streams; the
#      fraction of step time spent waiting for a batch;
#   3. weight broadcasts (benchmarks/bench_publish.py): training-thread cost per publish, the
#      former path vs the pinned, non_blocking snapshot sent by the publisher's thread;
#   4. a 2-minute `mouse run` (2 actor processes, CartPole) with the learner on the GPU:
#      env steps/s, updates/s, best evaluation return (from the run's summary.json).
#
#   benchmarks/gpu_check.sh [--allow-cpu] [--out DIR]
#
# Without CUDA it stops at once with exit status 2, unless --allow-cpu: then every part runs on
# the CPU with short durations (checks the script end to end; the figures mean nothing for a GPU).
# The parts' time limits add up to 470 s on CUDA (~5 min is typical).
# Each benchmark's own output goes to DIR/*.log (default: a fresh temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."

allow_cpu=0
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --allow-cpu) allow_cpu=1; shift ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (use --allow-cpu, --out DIR)" >&2; exit 2 ;;
  esac
done

py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x .venv/bin/python ]]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  device=cuda
  train_s=5; replay_size=300000; replay_steps=300; publish_args=(--turn-publishes 20 --rounds 3); run_min=2; slack=1
elif [[ $allow_cpu == 1 ]]; then
  device=cpu
  train_s=1; replay_size=50000; replay_steps=20; publish_args=(--turn-publishes 1 --rounds 1 --hidden 128); run_min=1; slack=3
  echo "gpu_check: no CUDA; --allow-cpu: running every part on the CPU with short durations" >&2
else
  echo "gpu_check: CUDA is not available (torch.cuda.is_available() is False with $py):" \
       "this check needs a CUDA GPU (--allow-cpu runs its parts on the CPU to test the script)" >&2
  exit 2
fi

out="${out:-$(mktemp -d -t mouse-gpu-check-XXXXXX)}"
mkdir -p "$out"
start=$SECONDS

step() {  # step NAME TIMEOUT_S COMMAND...: run one part, its output to $out/NAME.log
  local name="$1" limit=$(( $2 * slack )); shift 2
  echo "gpu_check: $name ($(( SECONDS - start )) s so far) -> $out/$name.log" >&2
  if ! timeout "$limit" "$@" >"$out/$name.log" 2>&1; then
    echo "gpu_check: $name failed (exit status above 0 or over ${limit}s); last lines of its log:" >&2
    tail -n 20 "$out/$name.log" >&2
    exit 1
  fi
}

step train_step 90 "$py" benchmarks/bench_train_step.py --device "$device" --seconds "$train_s" \
  --batch 256 --seq 16 --json "$out/train_step.json"
step batchifier 90 "$py" benchmarks/bench_replay.py --only-train --device "$device" \
  --size "$replay_size" --train-steps "$replay_steps" --json "$out/batchifier.json"
step publish 90 "$py" benchmarks/bench_publish.py --device "$device" "${publish_args[@]}" \
  --json "$out/publish.json"
step run 200 "$py" -m mouse run --learner.device "$device" --num-actors 2 \
  --budget.max-minutes "$run_min" --budget.max-env-steps 0 --budget.solved-return inf \
  --wandb.mode disabled --run-dir "$out/run-$$"  # a fresh run directory: never a resume

"$py" - "$out" "$device" "$(( SECONDS - start ))" "$out/run-$$" <<'EOF'
import json, sys
from pathlib import Path

out, device, seconds, run_dir = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
rows = []
t = json.loads((out / "train_step.json").read_text())
for r in t["rows"]:
    rows.append((f"train step {r['backbone']}, {r['config']}, B={t['batch']} S={t['seq']}",
                 f"{r['updates_per_s']:,.1f} updates/s", f"{r['vs_dqn']:.2f}x dqn alone"))
b = json.loads((out / "batchifier.json").read_text())
copies = "pinned + copy streams" if b["device"].startswith("cuda") else "no pinning on the CPU"
rows.append((f"batchifier -> mlp/dqn, B={b['batch']} S={b['seq']}, {copies}",
             f"{100 * b['batch_wait_fraction']:.1f}% of step time waiting",
             f"{b['updates_per_s']:,.1f} updates/s (goal < 5% waiting)"))
p = json.loads((out / "publish.json").read_text())
for r in p["rows"]:
    if r["mode"] == "after, publisher thread":
        rows.append((f"publish, hidden {r['hidden']}, publisher thread", f"{r['ms_per_publish']:.3f} ms CPU/broadcast",
                     "views, encode, send: off the training thread"))
    elif r["mode"] != "none":
        cost = f"{r['ms_per_publish']:.3f} ms/publish" if r["ms_per_publish"] else "no publish in time"
        rows.append((f"publish every {p['publish_every']}, hidden {r['hidden']}, {r['mode']}", cost,
                     f"{r['ms_per_update']:.4f} ms/update; {r['vs_none']:.3f}x updates/s of no publish"))
s = json.loads((run_dir / "summary.json").read_text())
minutes = max(s["wall_minutes"], 1e-9)
rows.append((f"mouse run, 2 actors, CartPole, {minutes:.1f} min",
             f"{s['env_steps'] / 60 / minutes:,.0f} env steps/s, {s['updates'] / 60 / minutes:,.1f} updates/s",
             f"best eval return {s['best_eval_return']:.1f}"))
logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
logged = [m for m in logged if "perf/loop/not_training" in m]
if logged:
    share = {k: sum(m[k] for m in logged) / len(logged)
             for k in ("perf/loop/updating", "perf/loop/idle", "perf/loop/not_training", "perf/loop/batch_wait")}
    rows.append(("mouse run: the learner loop's wall time, mean of its log lines",
                 f"{share['perf/loop/not_training']:.1%} not training",
                 f"updating {share['perf/loop/updating']:.1%}, idle (replay ratio) {share['perf/loop/idle']:.1%}, "
                 f"batch wait {share['perf/loop/batch_wait']:.1%} (goal: not training < 10%)"))
w = max(len(r[0]) for r in rows)
v = max(len(r[1]) for r in rows)
print(f"\nGPU check on {device} ({t['device_name']}), {seconds} s in all; logs in {out}")
print(f"{'what':<{w}}  {'figure':<{v}}  note")
for r in rows:
    print(f"{r[0]:<{w}}  {r[1]:<{v}}  {r[2]}")
EOF
