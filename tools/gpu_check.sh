#!/usr/bin/env bash
# One prepared GPU check (issue #19), <= 8 minutes on one GPU:
#   1. benchmarks/mfu.py on the GPU (gpt2-124m preset, bfloat16 autocast, torch.compile);
#   2. lesson 07 (profiling) with device="cuda" at full size;
#   3. lesson 04 (pretraining) with device="cuda" at full size;
# checks that each succeeded and wrote its figures, and writes
#   docs/gpu_reference.md                      device, date, MFU, tokens/s, run times
#   docs/gpu_reference/07_profiling_gpu.ipynb  lesson 07 as executed on the GPU (outputs kept),
#                                              for CPU learners to read
# Usage (on a machine with an NVIDIA GPU and the course set up: bash scripts/setup.sh):
#   bash tools/gpu_check.sh            # exit 0 when every step passed
# Needs no network: the course's data and models are read from the installed packages.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
t0=$SECONDS

"$py" - <<'EOF' || { echo "[gpu] no CUDA device visible to PyTorch: run this on a GPU machine"; exit 2; }
import sys, torch
if not torch.cuda.is_available():
    sys.exit(1)
print(f"[gpu] {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
out=docs/gpu_reference
mkdir -p "$out"
log=$(mktemp -d)

echo "[gpu] 1/3 benchmarks/mfu.py --device cuda (about 2 minutes)"
t=$SECONDS
timeout 240 "$py" benchmarks/mfu.py --device cuda --compile yes | tee "$log/mfu.txt"
mfu_s=$((SECONDS - t))
result=$(grep '^RESULT ' "$log/mfu.txt" | tail -1)
[ -n "$result" ] || { echo "[gpu] mfu.py printed no RESULT line"; exit 1; }

run_nb() {  # notebook, output, timeout, parameters...
  local nb=$1 dest=$2 limit=$3; shift 3
  timeout "$limit" "$py" -m papermill --cwd lessons --kernel python3 --no-progress-bar "$nb" "$dest" "$@"
}
echo "[gpu] 2/3 lesson 07 with device=cuda (about 2 minutes)"
t=$SECONDS
run_nb lessons/07_profiling.ipynb "$out/07_profiling_gpu.ipynb" 240 -p device cuda
l07_s=$((SECONDS - t))
echo "[gpu] 3/3 lesson 04 with device=cuda (about 2 minutes)"
t=$SECONDS
run_nb lessons/04_pretraining.ipynb "$log/04_pretraining_gpu.ipynb" 240 -p device cuda
l04_s=$((SECONDS - t))

"$py" - "$out/07_profiling_gpu.ipynb" "$log/04_pretraining_gpu.ipynb" "$result" "$mfu_s" "$l07_s" "$l04_s" <<'EOF'
"""Check the executed notebooks (no error output, the GPU really used) and write the reference."""
import datetime
import sys

import nbformat
import torch

nb07, nb04, result, mfu_s, l07_s, l04_s = sys.argv[1:]
figures = dict(kv.split("=", 1) for kv in result.split()[1:])
problems = []
for path in (nb07, nb04):
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    if any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code"
           for o in c.get("outputs", [])):
        problems.append(f"{path}: a cell raised")
    if "cuda" not in text.lower():
        problems.append(f"{path}: no output mentions cuda; did it run on the GPU?")
mfu = float(figures.get("mfu", "nan"))
if not mfu > 0:
    problems.append(f"mfu.py reported mfu={figures.get('mfu')}")
goal = 0.45
lines = [
    "# GPU reference run",
    "",
    "Written by `bash tools/gpu_check.sh` (do not edit by hand; rerun it on a GPU instead).",
    "",
    "| | |",
    "|---|---|",
    f"| date | {datetime.date.today().isoformat()} |",
    f"| device | {torch.cuda.get_device_name(0)} |",
    f"| torch / CUDA | {torch.__version__} / {torch.version.cuda} |",
    f"| benchmarks/mfu.py | {result.removeprefix('RESULT ')} |",
    f"| MFU | {mfu:.3f} (goal >= {goal} on an H100/H200-class GPU: {'met' if mfu >= goal else 'NOT met'}) |",
    f"| tokens/s | {figures.get('tokens_per_s', '?')} |",
    f"| run times | mfu.py {mfu_s} s, lesson 07 {l07_s} s, lesson 04 {l04_s} s |",
    "",
    "Lesson 07 as executed on this GPU: `docs/gpu_reference/07_profiling_gpu.ipynb`.",
    "One run on one machine: MFU moves by a few points between runs, drivers and clocks.",
]
open("docs/gpu_reference.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
if problems:
    print("[gpu] FAILED:\n  " + "\n  ".join(problems))
    sys.exit(1)
EOF
echo "[gpu] all checks passed in $((SECONDS - t0)) s; commit docs/gpu_reference.md and $out/"
