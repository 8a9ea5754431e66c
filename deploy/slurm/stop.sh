#!/usr/bin/env bash
# Stop a run cleanly: SIGTERM to the learner process alone (scancel --batch), which tells the
# actors to stop, checkpoints, runs a final evaluation and writes summary.json; W&B's
# service, not signalled, finishes the W&B run. Waits for the learner job to end (at most
# MOUSE_STOP_WAIT_S, 600 s), then cancels actor jobs that have not ended by themselves.
#   deploy/slurm/stop.sh RUN_DIR
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage="usage: stop.sh RUN_DIR"
run_dir=$(run_dir_arg "${1:-}")
need_slurm
learner=$(live_learner "$run_dir")
[ -n "$learner" ] || die "$run_dir has no pending or running learner (learner.jobid:" \
  "$(cat "$run_dir/learner.jobid" 2>/dev/null || echo none))"
case $(job_state "$learner") in
  PENDING) # nothing started, nothing to save
    actors=$(live_actor_jobs "$run_dir" | tr '\n' ' ')
    # shellcheck disable=SC2086  # a list of job ids
    scancel "$learner" $actors
    echo "learner job $learner was still pending: cancelled with its actor jobs ${actors:-(none)}"
    exit 0
    ;;
  COMPLETING) ;;                 # already ending
  *)
    scancel --batch --signal=TERM "$learner"
    echo "learner job $learner: asked to stop (checkpoint, final evaluation, summary.json)"
    ;;
esac
wait_s=${MOUSE_STOP_WAIT_S:-600}
for ((t = 0; t < wait_s; t += 2)); do
  [ -n "$(job_state "$learner")" ] || break
  sleep 2
done
[ -z "$(job_state "$learner")" ] ||
  die "learner job $learner still runs after ${wait_s}s: see $run_dir/slurm-learner-$learner.out"
# actors leave when the learner says so; give stragglers a moment, then SIGTERM (they flush)
for ((t = 0; t < 30; t += 2)); do
  [ -n "$(live_actor_jobs "$run_dir")" ] || break
  sleep 2
done
left=$(live_actor_jobs "$run_dir" | tr '\n' ' ')
[ -z "$left" ] || { scancel --signal=TERM $left; echo "actor jobs cancelled: $left"; }
if [ -f "$run_dir/summary.json" ] && [ "$run_dir/summary.json" -nt "$run_dir/learner.jobid" ]; then
  echo "stopped; $run_dir/summary.json:"
  grep -E '"(best_eval_return|env_steps|updates|stop_reason|wandb_dir)"' "$run_dir/summary.json"
else
  die "learner job $learner ended without writing summary.json: see $run_dir/slurm-learner-$learner.out"
fi
