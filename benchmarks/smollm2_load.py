"""SmolLM2 load time: first load (dequantize the GGUF, write the cache) vs second load (cache).

    python benchmarks/smollm2_load.py

Each load runs in a fresh Python process with an empty course cache in a temporary folder, so
nothing is shared with earlier runs. Reports the load_smollm2() call alone and the whole
process (interpreter start and imports included), and peak RSS.
Last line: RESULT first_load_s=... second_load_s=... second_process_s=... peak_rss_gb=...
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, resource, time
t0 = time.perf_counter()
import torch
from course_lib.data import load_smollm2
t1 = time.perf_counter()
tok, model = load_smollm2()
t2 = time.perf_counter()
ids = tok("To be, or not to be,", return_tensors="pt").input_ids
with torch.no_grad():
    text = tok.decode(model.generate(ids, max_new_tokens=8, do_sample=False)[0])
print(json.dumps({"imports_s": t1 - t0, "load_s": t2 - t1, "text": text,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def run(cache: str) -> dict:
    env = dict(os.environ, OPEN_LLM_LAB_CACHE=cache, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t0
    return res


def main() -> int:
    with tempfile.TemporaryDirectory() as cache:
        first, second = run(cache), run(cache)
    for name, r in (("first (dequantize + cache)", first), ("second (from cache)", second)):
        print(
            f"{name:28s} load_smollm2 {r['load_s']:6.2f} s  imports {r['imports_s']:5.2f} s  "
            f"process {r['process_s']:6.2f} s  peak RSS {r['peak_rss_gb']:.2f} GB  -> {r['text']!r}"
        )
    assert first["text"] == second["text"], "the cached model generates differently"
    print(
        f"RESULT first_load_s={first['load_s']:.2f} second_load_s={second['load_s']:.2f} "
        f"second_process_s={second['process_s']:.2f} peak_rss_gb={max(first['peak_rss_gb'], second['peak_rss_gb']):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
