"""Benchmark: the course training loop vs a bare PyTorch loop, and the lesson recipe's quality.

    python benchmarks/train.py                 # both parts (~6-8 minutes on 2 CPU cores)
    python benchmarks/train.py --skip-quality  # throughput only (~1 minute)

1. Throughput: ``course_lib.training.train`` (schedule, clipping, logging, tqdm bar) against the
   smallest loop that trains the same model on the same batches (forward, loss, backward, step),
   run interleaved in this process, ``--repeats`` times each; the ratio of median tokens/s.
   Goal: >= 0.95 (the course loop's extras cost at most 5%).
2. Quality: lesson 04's default recipe (``COURSE_RECIPES["small"]``) trained from scratch on the
   byte-level training plays; validation bits per byte on *all* held-out plays and the training
   time. Goal: <= 2.4 bits/byte within 5 minutes on 2 CPU cores. References: nanoGPT's CPU
   recipe for character-level Shakespeare reaches ~1.88 nats/char = 2.7 bits/byte in ~3 minutes
   on an M1; a plain 0.8M-parameter character model reached 1.83 nats/char = 2.64 bits/byte in
   2 minutes on the course machine; LZMA (xz -9) on the same validation text is printed below.

Last line: ``RESULT loop_vs_bare=... val_bits_per_byte=... train_minutes=...``
"""

from __future__ import annotations

import argparse
import lzma
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib.model import build_model, count_parameters, make_config
from course_lib.training import (
    COURSE_RECIPES,
    TrainConfig,
    evaluate_bits_per_byte,
    get_batch,
    make_optimizer,
    next_token_loss,
    shakespeare_bytes,
    train,
)


def bare_loop(model, ids, steps, batch_size, block_size, lr, seed) -> float:
    """The minimal loop: same model, optimizer and batches; no schedule, clipping or logging."""
    optimizer = make_optimizer(model, TrainConfig(learning_rate=lr))
    generator = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = get_batch(ids, batch_size, block_size, generator)
        loss = next_token_loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    loss.item()
    return steps * batch_size * block_size / (time.perf_counter() - t0)


def course_loop(model, ids, steps, batch_size, block_size, lr, seed, progress) -> float:
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=batch_size,
        block_size=block_size,
        learning_rate=lr,
        warmup_steps=min(10, steps),
        seed=seed,
        progress=progress,
        log_interval=10,
    )
    t0 = time.perf_counter()
    train(model, ids, None, cfg)
    return steps * batch_size * block_size / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int, default=30, help="steps per throughput measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--max-steps", type=int, default=None, help="override the recipe's steps (quality part)")
    p.add_argument("--no-progress", action="store_true", help="hide tqdm bars")
    args = p.parse_args(argv)

    recipe = dict(COURSE_RECIPES[args.preset])
    if args.max_steps:
        recipe["max_steps"] = args.max_steps
    bs, block, lr = recipe["batch_size"], recipe["block_size"], recipe["learning_rate"]
    train_ids, val_ids = shakespeare_bytes("train"), shakespeare_bytes("validation")
    config = make_config(args.preset)
    print(
        f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}; model {args.preset}: "
        f"{count_parameters(build_model(config)):,} parameters; batch {bs} x {block} bytes"
    )

    # 1. throughput, interleaved so that machine load affects both loops alike
    bare, course = [], []
    for r in range(args.repeats):
        bare.append(bare_loop(build_model(config, seed=r), train_ids, args.steps, bs, block, lr, r))
        course.append(
            course_loop(
                build_model(config, seed=r),
                train_ids,
                args.steps,
                bs,
                block,
                lr,
                r,
                progress=not args.no_progress,
            )
        )
        print(
            f"repeat {r}: bare {bare[-1]:8,.0f} tokens/s   course loop {course[-1]:8,.0f} tokens/s",
            flush=True,
        )
    ratio = statistics.median(course) / statistics.median(bare)
    print(f"course loop / bare loop (median tokens/s): {ratio:.3f}   (goal >= 0.95)")

    # 2. quality of the default recipe within its time budget
    val_bpb, minutes = float("nan"), float("nan")
    if not args.skip_quality:
        xz = 8 * len(lzma.compress(bytes(val_ids.tolist()), preset=9)) / len(val_ids)
        model = build_model(config, seed=0)
        cfg = TrainConfig(**recipe, seed=0, progress=not args.no_progress)
        t0 = time.perf_counter()
        history = train(model, train_ids, val_ids, cfg)
        minutes = (time.perf_counter() - t0) / 60
        val_bpb = evaluate_bits_per_byte(model, val_ids, block, bs)
        for h in history:
            if "val_bpb" in h:
                print(
                    f"  step {h['step']:5d}  {h['elapsed_s'] / 60:5.2f} min  validation (sampled) {h['val_bpb']:.3f} bits/byte"
                )
        print(
            f"default recipe: {recipe['max_steps']} steps in {minutes:.2f} min; validation on all "
            f"held-out plays {val_bpb:.3f} bits/byte (goal <= 2.4 within 5 min; xz -9: {xz:.3f})"
        )
    print(f"RESULT loop_vs_bare={ratio:.3f} val_bits_per_byte={val_bpb:.3f} train_minutes={minutes:.2f}")


if __name__ == "__main__":
    main()
