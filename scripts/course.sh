#!/usr/bin/env bash
# Set up (if needed) and open Open LLM Lab in JupyterLab at lesson 00, in learner mode.
#   bash scripts/course.sh                 learner mode (nbgrader's instructor tools hidden)
#   bash scripts/course.sh --instructor    instructor mode (formgrader, create assignment)
# Any other arguments go to `jupyter lab` (e.g. --port 8899 --no-browser).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

mode=learner
if [ "${1:-}" = "--instructor" ]; then mode=instructor; shift; fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
if [ "$mode" = learner ]; then
  # Extra config path: overrides the venv's own settings that enable nbgrader's instructor tools.
  export JUPYTER_CONFIG_PATH="$PWD/course_lib/config/learner${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
  start=lessons/00_welcome.ipynb
else
  start=solutions
fi
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-root)   # containers and CI run as root
echo "[course] JupyterLab in $mode mode, opening $start"
exec .venv/bin/jupyter lab --ServerApp.root_dir="$PWD" "${extra[@]}" "$@" "$start"
