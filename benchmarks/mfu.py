"""Tokens/s and MFU of the course's training loop on this device.

    python benchmarks/mfu.py                      # CPU: "small" preset, float32
    python benchmarks/mfu.py --device cuda        # GPU: "gpt2-124m" preset, bfloat16 autocast, torch.compile

The model is the course GPT (``course_lib.model``), trained with the course loop
(``course_lib.training.train``) on random byte ids (a step's speed does not depend on the data).
MFU = tokens/s x FLOPs per token (6N + 12LHQT, PaLM appendix B) / peak FLOP/s, where the peak is
the datasheet value for a known GPU in the dtype that ran, and on a CPU a peak measured on the
spot with a large matmul. The reference printed next to it is the best matmul this device
runs in the same dtype (an achievable ceiling; on a CPU it is the peak itself).

Goal on an H100 with bf16 and the ~124M configuration: MFU >= 45%, a target and not a result
(37% on an A100 for GPT-2 124M is a figure quoted from Karpathy's nanoGPT, not reproduced here;
tools/gpu_check.sh records what a real GPU run measures). Last line: ``RESULT device=... dtype=... tokens_per_s=... mfu=...``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from course_lib.model import build_model, count_parameters, make_config
from course_lib.profiling import flops_per_token, measure_matmul_flops, peak_flops, resolve_device
from course_lib.training import TrainConfig, train


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ap.add_argument(
        "--preset", default=None, help="course_lib.model preset (default: small on CPU, gpt2-124m on GPU)"
    )
    ap.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16"],
        help="float32, or bfloat16 autocast (default: float32 on CPU, bfloat16 on GPU)",
    )
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: 16)")
    ap.add_argument(
        "--block-size", type=int, default=None, help="tokens per sequence (default: the preset's context)"
    )
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: 30 on CPU, 60 on GPU)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: PyTorch's, one per core; 1 is steadier on a busy shared machine)",
    )
    ap.add_argument(
        "--compile",
        default="auto",
        choices=["auto", "yes", "no"],
        help="torch.compile the model (auto: on GPU only)",
    )
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    preset = args.preset or ("gpt2-124m" if gpu else "small")
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    steps = args.steps or (60 if gpu else 30)
    use_compile = args.compile == "yes" or (args.compile == "auto" and gpu)
    config = make_config(preset)
    block = args.block_size or config.max_position_embeddings
    batch = args.batch_size or 16
    if gpu:
        torch.set_float32_matmul_precision("high")  # float32 leftovers (loss, norms) may use TF32
    name = (
        torch.cuda.get_device_name(device)
        if gpu
        else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    )
    print(
        f"device: {name} | torch {torch.__version__} | preset {preset} | dtype {dtype} | "
        f"batch {batch} x {block} tokens | compile {use_compile}"
    )

    model = build_model(config, seed=0)
    print(
        f"parameters: {count_parameters(model) / 1e6:.2f}M "
        f"({count_parameters(model, exclude_embeddings=True) / 1e6:.2f}M non-embedding); "
        f"{flops_per_token(config, block) / 1e6:.1f} MFLOPs per training token"
    )
    model = model.to(device)
    run_model = torch.compile(model) if use_compile else model

    ids = torch.randint(
        0,
        config.vocab_size,
        (max(200_000, 4 * batch * (block + 1)),),
        generator=torch.Generator().manual_seed(0),
    )
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=batch,
        block_size=block,
        warmup_steps=max(1, steps // 10),
        autocast=dtype == "bfloat16",
        log_interval=max(1, steps // 6),
        eval_interval=steps,
        device=str(device),
        progress=False,
    )
    t0 = time.perf_counter()
    history = train(run_model, ids, None, cfg)
    wall = time.perf_counter() - t0
    rates = [h["tokens_per_s"] for h in history if "tokens_per_s" in h]
    steady = rates[1:] if len(rates) > 1 else rates  # the first interval pays warm-up / compilation
    tokens_per_s = statistics.median(steady)

    peak = peak_flops(device, dtype)
    achieved = tokens_per_s * flops_per_token(config, block)
    mfu = achieved / peak
    # The reference, in the same run: the best large matmul this device does in this dtype.
    ref_n = 8192 if gpu else None
    ref = peak if not gpu else measure_matmul_flops(device, getattr(torch, dtype), n=ref_n, repeat=10)
    print(
        f"training: {steps} steps in {wall:.1f} s; tokens/s per log interval: "
        + ", ".join(f"{r:,.0f}" for r in rates)
    )
    unit, scale = ("TFLOP/s", 1e12) if gpu else ("GFLOP/s", 1e9)
    print(
        f"achieved {achieved / scale:.2f} {unit} | peak {peak / scale:.2f} {unit} "
        f"({'datasheet' if gpu else 'measured matmul'}) | best matmul {ref / scale:.2f} {unit}"
    )
    print(f"MFU {mfu:.1%} of the peak, {achieved / ref:.1%} of the best matmul")
    result = {
        "device": device.type if not gpu else name.replace(" ", "_"),
        "dtype": dtype,
        "tokens_per_s": round(tokens_per_s),
        "mfu": round(mfu, 4),
    }
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
