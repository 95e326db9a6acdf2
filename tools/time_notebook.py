"""Check notebooks against the learner's budget: run them at their default parameters (or given
ones) with papermill and report wall time and the kernel's peak memory.

    python tools/time_notebook.py lessons/06_quantization.ipynb [more.ipynb ...]
    python tools/time_notebook.py --threads 2 --budget-min 5 --budget-gb 1.7 lessons/0*.ipynb
    python tools/time_notebook.py --test-parameters lessons/05_finetuning_evaluation.ipynb
    python tools/time_notebook.py --cells lessons/09_bias.ipynb   # which cell costs the time and memory

Binder gives a learner one or two CPU cores and 2 GB of RAM: run this on a quiet machine with
``--threads`` set to the cores a learner has. Each notebook runs in its own process, so the peak
resident memory reported is that notebook's kernel plus every process it started (a server in
lesson 13), in GB (2**30 bytes): the larger of the kernel's high-water mark and the summed RSS
sampled every 20 ms (a
notebook that resets its own high-water mark, as ``course_lib.adapt.PeakMemory`` does, would
otherwise hide its earlier peaks). Executed copies go to a temporary folder (or ``--out``) and never over the
committed notebook. Exit status 1 when a notebook fails or misses the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, resource, sys, threading, time
import papermill as pm
import psutil
nb, out, params, cwd = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
# The kernel's own high-water mark (ru_maxrss of the children) misses peaks when a notebook
# resets it (course_lib.adapt.PeakMemory writes /proc/self/clear_refs), so RSS is also sampled,
# summed over the kernel and every process it started (a server a lesson runs counts too: Binder's
# limit is on the whole container).
sampled, trace, stop = [0], [], threading.Event()
def sample():
    me = psutil.Process()
    while not stop.is_set():
        now = 0
        for p in me.children(recursive=True):
            try:
                now += p.memory_info().rss
            except psutil.Error:
                pass
        sampled[0] = max(sampled[0], now)
        trace.append((time.time(), now))
        stop.wait(0.02)
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
err = None
try:
    pm.execute_notebook(nb, out, parameters=params, cwd=cwd, progress_bar=False, kernel_name="python3")
except Exception as e:  # reported, not raised: the parent prints the table
    err = f"{type(e).__name__}: {str(e)[:300]}"
wall = time.perf_counter() - t0
stop.set()
peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, sampled[0])
cells = []  # per code cell: index, seconds, peak sampled RSS while it ran, first line
try:
    from datetime import datetime
    import nbformat
    for i, c in enumerate(nbformat.read(out, as_version=4).cells):
        pm_meta = c.get("metadata", {}).get("papermill", {})
        if c.cell_type != "code" or not pm_meta.get("start_time") or not pm_meta.get("end_time"):
            continue
        t0_, t1_ = (datetime.fromisoformat(pm_meta[k].replace("Z", "+00:00")).timestamp()
                    for k in ("start_time", "end_time"))
        rss = max((r for t, r in trace if t0_ <= t <= t1_), default=0)
        cells.append([i, t1_ - t0_, rss / 2**30, c.source.strip().splitlines()[0][:60] if c.source.strip() else ""])
except Exception as e:  # the per-cell table is a diagnosis aid, never a reason to fail
    cells = [[-1, 0.0, 0.0, f"no per-cell table: {e}"]]
print(json.dumps({"wall_s": wall, "peak_gb": peak / 2**30, "error": err, "cells": cells}))
"""


def run_one(nb: Path, params: dict, threads: int | None, out_dir: Path) -> dict:
    """Execute ``nb`` in a fresh process; returns ``{"wall_s", "peak_gb", "error"}``."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    out = out_dir / nb.name
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(nb), str(out), json.dumps(params), str(nb.resolve().parent)],
        env=env,
        capture_output=True,
        text=True,
    )
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {
            "wall_s": float("nan"),
            "peak_gb": float("nan"),
            "error": f"runner failed: {proc.stderr[-500:]}",
        }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2, help="OMP/MKL threads (a learner's cores)")
    ap.add_argument(
        "--test-parameters",
        action="store_true",
        help="use the notebook's test parameters instead of its defaults",
    )
    ap.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="override a parameter, e.g. -p max_steps=800",
    )
    ap.add_argument("--budget-min", type=float, default=5.0)
    ap.add_argument("--budget-gb", type=float, default=1.7, help="GB (2**30 bytes); Binder gives 2")
    ap.add_argument("--out", type=Path, default=None, help="keep executed copies here")
    ap.add_argument(
        "--cells",
        action="store_true",
        help="also print each code cell's seconds and the peak RSS sampled while it ran",
    )
    args = ap.parse_args(argv)

    overrides = {}
    for item in args.param:
        name, _, value = item.partition("=")
        if not name or not value:
            ap.error(f"--param wants NAME=JSON, got {item!r}")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    failed = False
    with tempfile.TemporaryDirectory(prefix="olm-time-") as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        print(f"{'notebook':44s} {'wall':>8s} {'peak RSS':>9s}  verdict")
        for nb in args.notebooks:
            if not nb.exists():
                ap.error(f"{nb} does not exist")
            params = {}
            if args.test_parameters:
                meta = json.loads(nb.read_text())["metadata"].get("open_llm_lab", {})
                params = dict(meta.get("test_parameters", {}))
            params.update(overrides)
            t0 = time.time()
            r = run_one(nb, params, args.threads, out_dir)
            over = []
            if r["error"]:
                over.append(f"FAILED {r['error']}")
            if r["wall_s"] > 60 * args.budget_min:
                over.append(f"over {args.budget_min:g} min")
            if r["peak_gb"] > args.budget_gb:
                over.append(f"over {args.budget_gb:g} GB")
            failed |= bool(over)
            print(
                f"{str(nb):44s} {r['wall_s']:7.1f}s {r['peak_gb']:7.2f}GB  {'; '.join(over) or 'ok'}"
                f"  (finished {time.strftime('%H:%M:%S')}, {time.time() - t0:.0f} s with start-up)",
                flush=True,
            )
            if args.cells:
                for i, secs, gb, first in r.get("cells", []):
                    print(f"    cell {i:3d} {secs:7.1f}s {gb:6.2f}GB  {first}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
