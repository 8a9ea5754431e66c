#!/usr/bin/env bash
# Scale a run out: submit N more actor tasks that join the learner of RUN_DIR.
#   deploy/slurm/add-actors.sh RUN_DIR N
# Extra sbatch options (partition, --ntasks per node, ...) go in SBATCH_ACTOR_ARGS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
run_dir=$(realpath -m "${1:?usage: add-actors.sh RUN_DIR N}")
n=${2:?usage: add-actors.sh RUN_DIR N}
learner=$(cat "$run_dir/learner.jobid" 2>/dev/null || true)
dep=()
[ -n "$learner" ] && dep=(--dependency="after:$learner")  # start once the learner has started
job=$(MOUSE_RUN_DIR="$run_dir" sbatch --parsable --export=ALL --array="0-$(( n - 1 ))" \
  "${dep[@]}" ${SBATCH_ACTOR_ARGS:-} "$here/actors.sbatch")
echo "actor job $job: $n actor tasks joining $(cat "$run_dir/learner.address" 2>/dev/null || echo "the learner of $run_dir")"
