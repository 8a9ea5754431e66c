#!/usr/bin/env bash
# Resume a run whose learner has ended (stopped, killed, node lost, time limit): submit its
# learner again; it loads RUN_DIR/checkpoint.pt. Actor jobs still running rejoin it by
# themselves when it comes back on the same node and port (they wait for it for
# MOUSE_ACTOR_PATIENCE_S); otherwise add actors with add-actors.sh.
#   deploy/slurm/resume.sh RUN_DIR [mouse learner flags...]
# A finished run (its budget spent, or solved) is refused unless the flags set a larger
# --budget. A learner that was killed is resumed on its port (MOUSE_PORT overrides).
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage="usage: resume.sh RUN_DIR [mouse learner flags]"
run_dir=$(run_dir_arg "${1:-}")
shift
need_slurm
find_mouse
[ -f "$run_dir/checkpoint.pt" ] || die "no $run_dir/checkpoint.pt to resume from: start a run with launch.sh"
refuse_live "$run_dir"
refuse_finished "$run_dir" "$@"
# a learner that was killed leaves its address behind, and its actors keep looking there
if [ -z "${MOUSE_PORT:-}" ] && [ -s "$run_dir/learner.address" ]; then
  MOUSE_PORT=$(sed -n 's/^tcp:.*:\([0-9]*\)$/\1/p' "$run_dir/learner.address")
  export MOUSE_PORT
fi
submit_learner "$run_dir" "$@"
actors=$(live_actor_jobs "$run_dir" | tr '\n' ' ')
if [ -n "$actors" ]; then
  echo "actor jobs still running: $actors(they rejoin the resumed learner by themselves)"
else
  echo "no actor jobs running: add some with $slurm_dir/add-actors.sh $run_dir N"
fi
