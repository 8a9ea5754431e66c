#!/usr/bin/env bash
# Start a run on a Slurm cluster: the learner job, then N actor tasks that join it.
#   deploy/slurm/launch.sh RUN_DIR NUM_ACTORS [mouse learner flags...]
# RUN_DIR must be on a filesystem the nodes share. A RUN_DIR with a live learner is refused;
# one with a checkpoint.pt resumes (see resume.sh); a finished one is refused unless the
# flags set a larger --budget. The learner asks for --gres=${MOUSE_LEARNER_GRES:-gpu:1}
# (none = CPU); extra sbatch options go in SBATCH_LEARNER_ARGS / SBATCH_ACTOR_ARGS.
# Logs: RUN_DIR/slurm-learner-JOB.out, RUN_DIR/slurm-actors-JOB_TASK.out
set -euo pipefail
source "$(dirname "$0")/common.sh"
usage="usage: launch.sh RUN_DIR NUM_ACTORS [mouse learner flags]"
run_dir=$(run_dir_arg "${1:-}")
n=${2:-}
[[ $n =~ ^[1-9][0-9]*$ ]] || die "NUM_ACTORS must be a positive number, got '$n' ($usage)"
shift 2
need_slurm
find_mouse
refuse_live "$run_dir"
refuse_finished "$run_dir" "$@"
mkdir -p "$run_dir"
submit_learner "$run_dir" --num-actors "$n" "$@"
"$slurm_dir/add-actors.sh" "$run_dir" "$n" ||
  die "no actors submitted: retry add-actors.sh, or stop.sh $run_dir"
echo "watch:     squeue; tail -f $run_dir/slurm-learner-$(cat "$run_dir/learner.jobid").out; cat $run_dir/status.json"
echo "scale out: $slurm_dir/add-actors.sh $run_dir N"
echo "stop:      $slurm_dir/stop.sh $run_dir    resume: $slurm_dir/resume.sh $run_dir"
