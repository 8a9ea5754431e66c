#!/usr/bin/env bash
# Scale a run out: submit N more actor tasks that join the learner of RUN_DIR.
#   deploy/slurm/add-actors.sh RUN_DIR N
# Extra sbatch options (partition, account, --ntasks = actors per array task, ...)
# go in SBATCH_ACTOR_ARGS. Logs: RUN_DIR/slurm-actors-JOB_TASK.out
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
run_dir=$(realpath -m "${1:?usage: add-actors.sh RUN_DIR N}")
n=${2:?usage: add-actors.sh RUN_DIR N}
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive number of actors, got '$n'" >&2; exit 1; }
learner=$(cat "$run_dir/learner.jobid" 2>/dev/null) ||
  { echo "no $run_dir/learner.jobid: start the run with launch.sh" >&2; exit 1; }
# actors of an ended learner would wait for it forever
[ -n "$(squeue -h -j "$learner" -t PD,CF,R,S 2>/dev/null)" ] ||
  { echo "learner job $learner of $run_dir is not pending or running" >&2; exit 1; }
# after: start once the learner job has started (they wait for it to listen)
job=$(MOUSE_RUN_DIR="$run_dir" sbatch --parsable --export=ALL \
  --array="0-$(( n - 1 ))" --dependency="after:$learner" \
  --output="$run_dir/slurm-actors-%A_%a.out" ${SBATCH_ACTOR_ARGS:-} "$here/actors.sbatch")
echo "actor job $job: $n actor tasks joining the learner of $run_dir (job $learner)"
