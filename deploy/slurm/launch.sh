#!/usr/bin/env bash
# Start a run on a Slurm cluster: the learner job, then N actor tasks that join it.
#   deploy/slurm/launch.sh RUN_DIR NUM_ACTORS [mouse learner flags...]
# RUN_DIR must be on a filesystem the nodes share. Extra sbatch options go in
# SBATCH_LEARNER_ARGS / SBATCH_ACTOR_ARGS (partitions, accounts, ...).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
run_dir=$(realpath -m "${1:?usage: launch.sh RUN_DIR NUM_ACTORS [learner flags]}")
n=${2:?usage: launch.sh RUN_DIR NUM_ACTORS [learner flags]}
shift 2
mkdir -p "$run_dir"
rm -f "$run_dir/learner.address"
learner=$(MOUSE_RUN_DIR="$run_dir" sbatch --parsable --export=ALL ${SBATCH_LEARNER_ARGS:-} \
  "$here/learner.sbatch" --num-actors "$n" "$@")
echo "$learner" > "$run_dir/learner.jobid"
echo "learner job $learner (run directory $run_dir)"
"$here/add-actors.sh" "$run_dir" "$n"
echo "scale out: $here/add-actors.sh $run_dir N    stop: scancel $learner (it checkpoints on SIGTERM)"
