#!/usr/bin/env bash
# Start a run on a Slurm cluster: the learner job, then N actor tasks that join it.
#   deploy/slurm/launch.sh RUN_DIR NUM_ACTORS [mouse learner flags...]
# RUN_DIR must be on a filesystem the nodes share; a RUN_DIR with a checkpoint.pt resumes.
# The learner asks for --gres=${MOUSE_LEARNER_GRES:-gpu:1}; MOUSE_LEARNER_GRES=none runs it
# on CPU. Extra sbatch options go in SBATCH_LEARNER_ARGS / SBATCH_ACTOR_ARGS (partitions,
# accounts, --time, ...). Logs: RUN_DIR/slurm-learner-JOB.out, RUN_DIR/slurm-actors-*.out
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
run_dir=$(realpath -m "${1:?usage: launch.sh RUN_DIR NUM_ACTORS [learner flags]}")
n=${2:?usage: launch.sh RUN_DIR NUM_ACTORS [learner flags]}
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "NUM_ACTORS must be a positive number, got '$n'" >&2; exit 1; }
shift 2
mkdir -p "$run_dir"
rm -f "$run_dir/learner.address"  # actors must not find a previous learner's address
learner=$(MOUSE_RUN_DIR="$run_dir" sbatch --parsable --export=ALL \
  --gres="${MOUSE_LEARNER_GRES:-gpu:1}" --output="$run_dir/slurm-learner-%j.out" \
  ${SBATCH_LEARNER_ARGS:-} "$here/learner.sbatch" --num-actors "$n" "$@") ||
  { echo "sbatch failed (no GPU nodes? MOUSE_LEARNER_GRES=none runs the learner on CPU)" >&2; exit 1; }
echo "$learner" > "$run_dir/learner.jobid"
echo "learner job $learner (run directory $run_dir)"
"$here/add-actors.sh" "$run_dir" "$n" ||
  { echo "no actors submitted: retry add-actors.sh, or scancel $learner" >&2; exit 1; }
echo "watch: squeue; tail -f $run_dir/slurm-learner-$learner.out"
echo "scale out: $here/add-actors.sh $run_dir N    stop: scancel $learner (it checkpoints on SIGTERM)"
