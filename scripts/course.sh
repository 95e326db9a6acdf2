#!/usr/bin/env bash
# Set up (if needed) and open Open LLM Lab in JupyterLab.
#   bash scripts/course.sh                 learner mode: opens my_work/lessons/00_welcome.ipynb
#   bash scripts/course.sh --instructor    instructor mode: the whole course folder, formgrader
#   bash scripts/course.sh --dry-run ...   do everything but start JupyterLab: print its command
# Any other arguments go to `jupyter lab` (e.g. --port 8899 --no-browser).
#
# Learner mode works in my_work/, a copy of lessons/ and labs/ made on the first run. git
# ignores it (my_work/.gitignore), so running lessons never touches tracked files and
# `git pull` brings course updates without conflicts. Later runs copy files the course added
# and update files the learner never changed; a file the learner changed is never overwritten
# (a note says how to get the course's new version).
#   OPEN_LLM_LAB_WORK_DIR=DIR     the working copy's folder (default: my_work)
#   OPEN_LLM_LAB_SKIP_SETUP=1     do not run scripts/setup.sh first (tests)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ "${OPEN_LLM_LAB_SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh

mode=learner dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --instructor) mode=instructor; shift ;;
    --dry-run) dry_run=1; shift ;;
    *) break ;;
  esac
done

WORK="${OPEN_LLM_LAB_WORK_DIR:-my_work}"
STATE="$WORK/.course-sources"   # "<sha256 of the course file the copy was made from>  <path>"

if command -v sha256sum >/dev/null 2>&1; then sha() { sha256sum "$1" | cut -d' ' -f1; }
else sha() { shasum -a 256 "$1" | cut -d' ' -f1; }; fi   # macOS
recorded_sha() { awk -v f="$1" '$2 == f { print $1 }' "$STATE"; }
record() {  # record <path> <sha>: the learner's copy of <path> now matches course version <sha>
  awk -v f="$1" '$2 != f' "$STATE" > "$STATE.tmp"
  printf '%s  %s\n' "$2" "$1" >> "$STATE.tmp"
  mv "$STATE.tmp" "$STATE"
}

# Copy lessons/ and labs/ into my_work/ without ever overwriting a learner's change.
sync_working_copy() {
  local first=0 added=0 updated=0 src dst sum old kept=()
  [ -d "$WORK" ] || first=1
  mkdir -p "$WORK"
  [ -f "$WORK/.gitignore" ] || printf '%s\n' \
    "# Your working copy of the course (scripts/course.sh): git ignores all of it." '*' > "$WORK/.gitignore"
  touch "$STATE"
  while IFS= read -r -d '' src; do
    dst="$WORK/$src" sum=$(sha "$src") old=$(recorded_sha "$src")
    if [ ! -e "$dst" ]; then
      mkdir -p "$(dirname "$dst")"; cp "$src" "$dst"; record "$src" "$sum"; added=$((added + 1))
    elif [ "$sum" != "$old" ]; then
      if [ "$(sha "$dst")" = "$sum" ]; then
        record "$src" "$sum"                       # already the course's version
      elif [ -n "$old" ] && [ "$(sha "$dst")" = "$old" ]; then
        cp "$src" "$dst"; record "$src" "$sum"; updated=$((updated + 1))   # untouched copy
      else
        kept+=("$src")                             # the learner's edits win
      fi
    fi
  done < <(find lessons labs -type f -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z)
  if [ "$first" = 1 ]; then
    echo "[course] created your working copy $WORK/ ($added files from lessons/ and labs/); your work stays there"
  elif [ $((added + updated)) -gt 0 ]; then
    echo "[course] $WORK/: $added new and $updated updated course files (files you changed are kept)"
  fi
  if [ ${#kept[@]} -gt 0 ]; then
    echo "[course] the course has a newer version of ${#kept[@]} file(s) you have changed; yours are kept:"
    printf '[course]   %s\n' "${kept[@]/#/$WORK/}"
    echo "[course] to get a new version, rename your copy (e.g. to NAME.mine.ipynb) and run this script again"
  fi
}

export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
config="$PWD/course_lib/config"
# Extra config paths (first wins): no "Jupyter news?" toast, build folders hidden; in learner
# mode also nbgrader's instructor tools and its (then empty) menu off.
args=(--ServerApp.root_dir="$PWD")
if [ "$mode" = learner ]; then
  sync_working_copy
  export JUPYTER_CONFIG_PATH="$config/learner:$config/common${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
  start=lessons/00_welcome.ipynb
  work_abs=$(cd "$WORK" && pwd)
  # custom.css shows nbgrader's Validate button only on notebooks with graded cells (labs). Jupyter
  # reads it from the config dir only: use one in the working copy, and keep the learner's own
  # config (lower priority), settings and workspaces where they were.
  user_config=$(.venv/bin/jupyter --config-dir)
  export JUPYTERLAB_SETTINGS_DIR="${JUPYTERLAB_SETTINGS_DIR:-$user_config/lab/user-settings}"
  export JUPYTERLAB_WORKSPACES_DIR="${JUPYTERLAB_WORKSPACES_DIR:-$user_config/lab/workspaces}"
  export JUPYTER_CONFIG_DIR="$work_abs/.jupyter" JUPYTER_CONFIG_PATH="$JUPYTER_CONFIG_PATH:$user_config"
  mkdir -p "$JUPYTER_CONFIG_DIR/custom"
  cp "$config/learner/custom/custom.css" "$JUPYTER_CONFIG_DIR/custom/custom.css"
  args=(--ServerApp.root_dir="$work_abs" --LabApp.custom_css=True)
  shown="$WORK/$start"
else
  export JUPYTER_CONFIG_PATH="$config/common${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
  start=solutions
  shown="the course folder (formgrader: Nbgrader menu > Formgrader)"
  # nbgrader's exchange (nbgrader_config.py): the course-local default is created here, once.
  if [ -z "${NBGRADER_EXCHANGE:-}" ] && [ ! -d exchange ]; then
    mkdir -p exchange && printf '%s\n' "# nbgrader's course-local exchange: git ignores it." '*' > exchange/.gitignore
    echo "[course] created nbgrader's exchange folder exchange/ (NBGRADER_EXCHANGE=DIR to use another)"
  elif [ -n "${NBGRADER_EXCHANGE:-}" ] && [ ! -d "$NBGRADER_EXCHANGE" ]; then
    echo "[course] hint: the exchange $NBGRADER_EXCHANGE does not exist: create it (README, instructor guide)" >&2
  fi
fi
# The printed URL and the browser both open $start (a positional path would become the root).
args+=(--LabApp.default_url="/lab/tree/$start")
[ "$(id -u)" = 0 ] && args+=(--allow-root)   # containers and CI run as root
echo "[course] JupyterLab in $mode mode, opening $shown"
if [ "$dry_run" = 1 ]; then
  printf 'JUPYTER_CONFIG_PATH=%s\n' "$JUPYTER_CONFIG_PATH"
  [ "$mode" = instructor ] || printf 'JUPYTER_CONFIG_DIR=%s\n' "$JUPYTER_CONFIG_DIR"
  printf '%q ' .venv/bin/jupyter lab "${args[@]}" "$@"; echo
  exit 0
fi
exec .venv/bin/jupyter lab "${args[@]}" "$@"
