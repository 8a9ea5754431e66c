# Shared by launch.sh, add-actors.sh, resume.sh and stop.sh (sourced, never run).
# The job scripts (*.sbatch) do not source it: sbatch runs a copy of them from its spool
# directory, so what they need comes through the environment (MOUSE, MOUSE_RUN_DIR, ...).

slurm_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$slurm_dir/../.." && pwd)

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

need_slurm() {
  local c
  for c in sbatch squeue scancel; do
    command -v "$c" >/dev/null || die "'$c' not found: run this on a Slurm login node"
  done
}

# The run directory as an absolute path (the jobs run elsewhere, in other directories).
run_dir_arg() {
  [ -n "${1:-}" ] || die "$usage"
  realpath -m "$1"
}

# MOUSE, exported for the jobs: the command they run, found here and not on the nodes,
# whether or not a venv is active. In order: $MOUSE (a path or a command line such as
# "python -m mouse"); `mouse` on PATH (an active venv); this repository's .venv/bin/mouse
# (what ./dev.sh makes); `mouse` next to the python3 on PATH.
find_mouse() {
  local p py
  if [ -n "${MOUSE:-}" ]; then
    p=$(type -P "${MOUSE%% *}" || true)
    [ -n "$p" ] && [ -f "$p" ] || die "MOUSE='$MOUSE': '${MOUSE%% *}' is not a program"
    MOUSE="$(realpath -s "$p")${MOUSE#"${MOUSE%% *}"}"
  elif p=$(type -P mouse) && [ -f "$p" ]; then
    MOUSE=$(realpath -s "$p")
  elif [ -x "$repo_dir/.venv/bin/mouse" ]; then
    MOUSE=$repo_dir/.venv/bin/mouse
  elif py=$(type -P python3) && [ -x "$(dirname "$py")/mouse" ]; then
    MOUSE=$(dirname "$py")/mouse
  else
    die "no mouse command found: run ./dev.sh once (it makes $repo_dir/.venv), activate the venv " \
        "mouse is installed in, or set MOUSE=/path/to/venv/bin/mouse"
  fi
  export MOUSE
}

# The state of job $1 while it is pending, running, suspended or completing; "" once it has
# ended. Stops the script when Slurm cannot be asked (no answer is not "it has ended").
job_state() {
  local out
  if out=$(squeue -h -j "$1" -t PD,CF,R,S,CG -o %T 2>&1); then
    echo "$out" | head -n 1
  elif [[ $out == *"Invalid job id"* ]]; then
    echo ""
  else
    die "cannot ask Slurm about job $1: $out"
  fi
}

# The learner job of run directory $1 if it has not ended; "" otherwise.
live_learner() {
  local job
  job=$(cat "$1/learner.jobid" 2>/dev/null) || return 0
  [ -n "$job" ] && [ -n "$(job_state "$job")" ] && echo "$job"
  return 0
}

refuse_live() {
  local job
  job=$(live_learner "$1")
  [ -z "$job" ] || die "$1 has a live learner: job $job is $(job_state "$job"). One learner per run" \
    "directory: scale it with add-actors.sh, stop it with stop.sh, or use another RUN_DIR"
}

# A run that ended by its budget or by solving would end again at once when resumed (and
# replace its summary.json): refuse unless the learner flags ($2...) set a --budget.
refuse_finished() {
  local run_dir=$1 reason a
  shift
  [ -f "$run_dir/summary.json" ] || return 0
  reason=$(sed -n 's/^ *"stop_reason": "\(.*\)",\{0,1\}$/\1/p' "$run_dir/summary.json")
  case $reason in budget:* | solved:*) ;; *) return 0 ;; esac
  for a in "$@"; do
    case $a in --budget.*) return 0 ;; esac
  done
  die "$run_dir has finished ($reason; see its summary.json). To train on, resume it with a" \
    "larger budget (e.g. --budget.max-env-steps N, --budget.solved-return inf), or use another RUN_DIR"
}

# The actor jobs of run directory $1 that have not ended (add-actors.sh records them).
live_actor_jobs() {
  local job
  [ -f "$1/actors.jobids" ] || return 0
  while read -r job; do
    [ -n "$job" ] && [ -n "$(job_state "$job")" ] && echo "$job"
  done <"$1/actors.jobids"
  return 0
}

# Submit the learner job of run directory $1 with learner flags $2...; records learner.jobid.
# A run directory that holds a run (a checkpoint) resumes it with the run's own config.json,
# the flags on top.
submit_learner() {
  local run_dir=$1 job
  shift
  [ ! -f "$run_dir/checkpoint.pt" ] || [ ! -f "$run_dir/config.json" ] ||
    set -- --config "$run_dir/config.json" "$@"
  # the previous learner is gone (refuse_live): its address must not lead actors astray
  rm -f "$run_dir/learner.address"
  # shellcheck disable=SC2086  # SBATCH_LEARNER_ARGS is a list of options
  job=$(MOUSE_RUN_DIR="$run_dir" sbatch --parsable --export=ALL \
    --gres="${MOUSE_LEARNER_GRES:-gpu:1}" --output="$run_dir/slurm-learner-%j.out" \
    ${SBATCH_LEARNER_ARGS:-} "$slurm_dir/learner.sbatch" "$@") ||
    die "sbatch failed (no GPU nodes? MOUSE_LEARNER_GRES=none runs the learner on CPU)"
  job=${job%%;*} # "id;cluster" on a multi-cluster setup
  echo "$job" >"$run_dir/learner.jobid"
  echo "learner job $job (run directory $run_dir, mouse: $MOUSE)"
}
