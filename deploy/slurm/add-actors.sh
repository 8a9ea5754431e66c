#!/usr/bin/env bash
# Scale a run out: submit N more actor tasks that join the learner of RUN_DIR.
#   deploy/slurm/add-actors.sh RUN_DIR N
# Extra sbatch options (partition, account, --ntasks = actors per array task, --time, ...)
# go in SBATCH_ACTOR_ARGS. Logs: RUN_DIR/slurm-actors-JOB_TASK.out
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage="usage: add-actors.sh RUN_DIR N"
run_dir=$(run_dir_arg "${1:-}")
n=${2:-}
[[ $n =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number of actors, got '$n' ($usage)"
need_slurm
find_mouse
[ -f "$run_dir/learner.jobid" ] || die "no $run_dir/learner.jobid: start the run with launch.sh"
learner=$(live_learner "$run_dir")
# actors of an ended learner would only wait for their connect deadline
[ -n "$learner" ] || die "the learner of $run_dir (job $(cat "$run_dir/learner.jobid")) has ended:" \
  "resume it with resume.sh first"
# after: start once the learner job has started (they wait for it to listen)
# shellcheck disable=SC2086  # SBATCH_ACTOR_ARGS is a list of options
job=$(MOUSE_RUN_DIR="$run_dir" MOUSE_LEARNER_JOB="$learner" sbatch --parsable --export=ALL \
  --array="0-$((n - 1))" --dependency="after:$learner" \
  --output="$run_dir/slurm-actors-%A_%a.out" ${SBATCH_ACTOR_ARGS:-} "$slurm_dir/actors.sbatch")
job=${job%%;*}
echo "$job" >>"$run_dir/actors.jobids"
echo "actor job $job: $n actor tasks joining the learner of $run_dir (job $learner)"
