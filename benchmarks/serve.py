"""Continuous batching vs one request at a time: ``course_lib serve`` under an async load generator.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python benchmarks/serve.py           # SmolLM2, c = 1, 4, 8, 16
    HF_HUB_OFFLINE=1 python benchmarks/serve.py --concurrency 1 4 --tokens 8  # a smoke test

One run, two servers in turn on free localhost ports, the same requests for both:

  static      ``--batching static --max-batch-size 1``: one request at a time (the baseline)
  continuous  ``--batching continuous --max-batch-size 16``: admit and retire at every step

At each concurrency c the generator (``course_lib.load_test.run_load``, httpx, streaming) sends
max(2c, 8) completion requests, at most c in flight, each with ``max_tokens`` output tokens and
``ignore_eos`` so every request produces the same number of tokens; prompts differ (different
lengths). Reported per arm and c: requests/s, output tokens/s, TTFT and TPOT p50/p95 (ms, over
requests; TPOT excludes the first token, as vLLM's benchmark_serving does) and errors, plus the
server's peak RSS (the figure ``deploy/kubernetes/deployment.yaml`` sizes its memory from).

Goals: cb_vs_static_tokens_per_s_c8 >= 3, errors = 0, p95 TTFT reported.
Last line: RESULT cb_vs_static_tokens_per_s_c8=... ttft_p50_ms_c8=... ttft_p95_ms_c8=... tpot_p50_ms_c8=... errors=...
"""

from __future__ import annotations

import argparse

import psutil

from course_lib.load_test import run_load, summarize
from course_lib.serve import ServerProcess

TOPICS = ["the sea", "a mountain", "the night sky", "a small village", "an old library", "the first snow"]


def prompts(n: int) -> list[str]:
    """n different prompts of different lengths."""
    return [
        f"Write a short story about {TOPICS[i % len(TOPICS)]}." + " Be vivid." * (i % 3) for i in range(n)
    ]


def peak_rss_gib(pid: int) -> float:
    """VmHWM (peak resident set) of a process, GiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return psutil.Process(pid).memory_info().rss / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--tokens", type=int, default=32, help="output tokens per request")
    args = ap.parse_args()

    arms = {"static": dict(batching="static", max_batch_size=1), "continuous": dict(max_batch_size=16)}
    table, rss = {}, {}
    for arm, options in arms.items():
        with ServerProcess(args.model, **options) as server:
            run_load(server.base_url, prompts(2), args.model, concurrency=2, max_tokens=4)  # warm-up
            for c in args.concurrency:
                recs, seconds = run_load(
                    server.base_url,
                    prompts(max(2 * c, 8)),
                    args.model,
                    concurrency=c,
                    max_tokens=args.tokens,
                    ignore_eos=True,
                    temperature=0,
                    progress=True,
                )
                table[arm, c] = s = summarize(recs, seconds)
                print(
                    f"{arm:>10} c={c:<3} {s['requests_per_s']:6.2f} req/s {s['output_tokens_per_s']:7.1f} tok/s  "
                    f"TTFT p50 {s['ttft_p50_ms']:7.0f} p95 {s['ttft_p95_ms']:7.0f} ms  "
                    f"TPOT p50 {s['tpot_p50_ms']:6.1f} p95 {s['tpot_p95_ms']:6.1f} ms  errors {s['errors']}",
                    flush=True,
                )
            rss[arm] = peak_rss_gib(server.proc.pid)
    print(
        f"server peak RSS: static {rss['static']:.2f} GiB, continuous (batch 16) {rss['continuous']:.2f} GiB"
    )
    c8 = 8 if 8 in args.concurrency else args.concurrency[-1]
    cb, st = table["continuous", c8], table["static", c8]
    errors = sum(s["errors"] for s in table.values())
    ratio = cb["output_tokens_per_s"] / st["output_tokens_per_s"]
    print(
        f"RESULT cb_vs_static_tokens_per_s_c8={ratio:.2f} ttft_p50_ms_c8={cb['ttft_p50_ms']:.0f} "
        f"ttft_p95_ms_c8={cb['ttft_p95_ms']:.0f} tpot_p50_ms_c8={cb['tpot_p50_ms']:.1f} "
        f"static_ttft_p95_ms_c8={st['ttft_p95_ms']:.0f} cb_tokens_per_s_c8={cb['output_tokens_per_s']:.1f} "
        f"static_tokens_per_s_c8={st['output_tokens_per_s']:.1f} server_peak_rss_gib={rss['continuous']:.2f} "
        f"errors={errors}"
    )


if __name__ == "__main__":
    main()
