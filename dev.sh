#!/usr/bin/env bash
# Set-up and the two everyday commands. The first call creates .venv and installs
# mouse into it; later calls reuse it (re-installed when pyproject.toml changes).
#   ./dev.sh run  [mouse run flags]   the main job: learner + 2 actors on CartPole-v1
#   ./dev.sh test [pytest args]       the test suite (what CI runs)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${MOUSE_VENV:-.venv}
PY=${PYTHON:-python3}
# pip's notes about this machine's package mirrors are noise; real errors still show
quiet() { grep -v -e "^WARNING: Location '" -e "^WARNING: Running pip as" || true; }

if [ ! -x "$VENV/bin/mouse" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
  echo "dev.sh: setting up $VENV (first run takes a minute or two)" >&2
  "$PY" -m venv "$VENV"
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    # no GPU: the CPU build of torch first, so pyproject's torch range is already met
    # and pip never pulls the multi-GB CUDA build
    "$VENV/bin/pip" install -q "torch==2.13.0" 2>&1 | quiet
  fi
  "$VENV/bin/pip" install -q -e ".[test]" 2>&1 | quiet
  touch "$VENV/.installed"
fi

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  run)  exec "$VENV/bin/mouse" run "$@" ;;
  test) exec "$VENV/bin/python" -m pytest "$@" ;;
  *)    echo "usage: ./dev.sh run [mouse run flags] | ./dev.sh test [pytest args]" >&2; exit 2 ;;
esac
