"""Weight-only quantization of the course's models: bytes, quality and CPU latency vs fp32.

Methods (all side by side with the fp32 reference in one run):
  ours int8 per-channel   course_lib.quantization.quantize_model(bits=8), symmetric, fp16 scales
  ours int4 group 64      quantize_model(bits=4, group_size=64), symmetric (pad=True for the GPT)
  ours int4 group 32      the same with groups of 32
  torch.ao int8 dynamic   torch.ao.quantization.quantize_dynamic: int8 weights + int8 kernels

Quality: course GPT validation bits per byte (perplexity per byte = 2**bpb) and the sentiment
classifier's test accuracy. Bytes: the linear layers' weights, scales and biases (the layers
quantize_model swaps) relative to fp32; torch.ao via serialised state_dict of the whole model.
Latency: median forward time of a batch of 8 context-length windows through the GPT, relative
to fp32, measured in this process.

Goals (issue #5): int8 per-channel within +1% perplexity and <= 0.5 point accuracy loss at
<= 0.27x weight bytes; int4 group 64 within +8% perplexity at <= 0.16x weight bytes.

    python benchmarks/quantization.py                      # course defaults (small GPT, cached)
    python benchmarks/quantization.py --preset tiny --max-steps 50 --n-eval-reviews 64 --classifier-n-train 32
"""

from __future__ import annotations

import argparse
import io
import logging
import time
import warnings

import numpy as np
import torch
from torch import nn


def state_dict_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def median_latency_ms(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--eval-batches", type=int, default=40)
    p.add_argument("--classifier-n-train", type=int, default=3000)
    p.add_argument("--classifier-epochs", type=int, default=2)
    p.add_argument("--n-eval-reviews", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--no-classifier", action="store_true")
    args = p.parse_args(argv)

    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from course_lib import quantization as Q
    from course_lib.training import evaluate_bits_per_byte, get_batch, load_course_gpt, shakespeare_bytes

    torch.manual_seed(0)
    gpt, info = load_course_gpt(args.preset, max_steps=args.max_steps, progress=False)
    val_ids = shakespeare_bytes("validation")
    block = info["block_size"]

    def bpb(model):
        return evaluate_bits_per_byte(
            model, val_ids, block_size=block, batch_size=32, max_batches=args.eval_batches
        )

    methods = {
        "fp32": lambda m, pad: m,
        "ours int8 per-channel": lambda m, pad: Q.quantize_model(m, bits=8, group_size="channel"),
        "ours int4 group 64": lambda m, pad: Q.quantize_model(m, bits=4, group_size=64, pad=pad),
        "ours int4 group 32": lambda m, pad: Q.quantize_model(m, bits=4, group_size=32, pad=pad),
        "torch.ao int8 dynamic": lambda m, pad: torch.ao.quantization.quantize_dynamic(
            m, {nn.Linear}, dtype=torch.qint8
        ),
    }
    x = get_batch(val_ids, 8, block, generator=torch.Generator().manual_seed(0))[0]
    fp32_linear, fp32_sd = Q.linear_nbytes(gpt), state_dict_bytes(gpt)
    rows = {}
    for name, make in methods.items():
        model = make(gpt, True)
        ao = name.startswith("torch.ao")
        rows[name] = {
            "bytes_ratio": state_dict_bytes(model) / fp32_sd if ao else Q.linear_nbytes(model) / fp32_linear,
            "bpb": bpb(model),
            "latency_ms": median_latency_ms(model, x, args.repeats),
        }
    # fp32 latency once more at the end: a drifting machine shows up as a ratio far from 1
    fp32_again = median_latency_ms(gpt, x, args.repeats)

    base = rows["fp32"]
    for r in rows.values():
        r["ppl_delta_pct"] = 100 * (2 ** (r["bpb"] - base["bpb"]) - 1)
        r["latency_ratio"] = r["latency_ms"] / base["latency_ms"]

    if not args.no_classifier:
        from course_lib.data import load_rotten_tomatoes
        from course_lib.finetune import load_sentiment_classifier, predict_proba

        tok, clf = load_sentiment_classifier(
            n_train=args.classifier_n_train, epochs=args.classifier_epochs, progress=False
        )
        test = load_rotten_tomatoes()["test"]
        n = min(args.n_eval_reviews, len(test))
        test = test.select(range(n))
        labels = np.array(test["label"])
        acc0 = None
        for name, make in methods.items():
            model = make(clf, False)
            acc = float((predict_proba(model, tok, test["text"]).argmax(1) == labels).mean())
            acc0 = acc if acc0 is None else acc0
            rows[name]["accuracy"] = acc
            rows[name]["acc_delta_pts"] = 100 * (acc - acc0)

    print(
        f"course GPT {args.preset}: {info['parameters']:,} parameters, val {base['bpb']:.4f} bits/byte "
        f"({args.eval_batches} x 32 windows of {block}); latency batch {tuple(x.shape)}, median of {args.repeats}"
    )
    print(f"fp32 latency at start {base['latency_ms']:.2f} ms, at end {fp32_again:.2f} ms")
    cols = ["bytes_ratio", "bpb", "ppl_delta_pct", "latency_ms", "latency_ratio"]
    if not args.no_classifier:
        cols += ["accuracy", "acc_delta_pts"]
    print(f"{'method':24s}" + "".join(f"{c:>15s}" for c in cols))
    for name, r in rows.items():
        print(f"{name:24s}" + "".join(f"{r[c]:15.4f}" for c in cols))

    i8, i4 = rows["ours int8 per-channel"], rows["ours int4 group 64"]
    goals = [
        ("int8 ppl delta <= +1%", i8["ppl_delta_pct"] <= 1.0),
        ("int8 bytes <= 0.27x", i8["bytes_ratio"] <= 0.27),
        ("int4 g64 ppl delta <= +8%", i4["ppl_delta_pct"] <= 8.0),
        ("int4 g64 bytes <= 0.16x", i4["bytes_ratio"] <= 0.16),
    ]
    if not args.no_classifier:
        goals.append(("int8 accuracy loss <= 0.5 pt", i8["acc_delta_pts"] >= -0.5))
    for goal, ok in goals:
        print(f"goal {goal:32s} {'met' if ok else 'MISSED'}")
    result = {
        "int8_ppl_delta_pct": i8["ppl_delta_pct"],
        "int8_bytes_ratio": i8["bytes_ratio"],
        "int4_g64_ppl_delta_pct": i4["ppl_delta_pct"],
        "int4_g64_bytes_ratio": i4["bytes_ratio"],
        "int8_latency_ratio": rows["torch.ao int8 dynamic"]["latency_ratio"],
        "ours_int8_latency_ratio": i8["latency_ratio"],
    }
    if not args.no_classifier:
        result["int8_acc_delta_pts"] = i8["acc_delta_pts"]
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
