#!/usr/bin/env bash
# Set up (if needed) and run the whole Open LLM Lab test suite, offline. Prints its wall time.
# Extra arguments go to pytest (e.g. -k lab00, -x).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
bash scripts/setup.sh || exit 1
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
# Two test workers share two cores: one math thread each, or they oversubscribe and crawl.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
workers=${TEST_WORKERS:-2}
# Lint and format first (seconds): the rules are in pyproject.toml [tool.ruff]. Fix with
#   .venv/bin/ruff check --fix . && .venv/bin/ruff format .
echo "[test] ruff check + ruff format --check"
.venv/bin/ruff check --no-cache . || { echo "[test] ruff check failed (see above)"; exit 1; }
.venv/bin/ruff format --no-cache --check . || { echo "[test] ruff format: run .venv/bin/ruff format ."; exit 1; }
.venv/bin/python -m pytest -n "$workers" --dist worksteal -p no:cacheprovider -q -ra --durations=15 "$@"
status=$?
echo "[test] wall time: $(( $(date +%s) - start )) s (setup included), exit status $status"
exit $status
