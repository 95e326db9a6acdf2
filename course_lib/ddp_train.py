"""The course training loop, scaled out with DistributedDataParallel (DDP).

Run it with torchrun, which starts one process per "device" and tells each its rank::

    torchrun --standalone --nproc_per_node=2 -m course_lib.ddp_train --preset tiny --max-steps 50 --out ddp_run

What changes compared with ``course_lib.training.train`` (and nothing else does):

1. ``dist.init_process_group("gloo")``: the processes find each other (gloo works on CPUs; on
   GPUs one would use "nccl").
2. Every rank builds the *same* model (same seed) and wraps it in ``DistributedDataParallel``,
   which broadcasts rank 0's weights and, during ``backward()``, all-reduces (averages) the
   gradients across ranks, so every rank takes the identical optimizer step.
3. Each rank draws *different* batches (its data generator is seeded with ``seed + rank``): with
   ``world_size`` ranks, one step sees ``world_size * batch_size`` sequences. DDP with batch B on
   2 ranks is therefore the same computation as one process with batch 2B.
4. Only rank 0 prints, evaluates and saves.

Outputs in ``--out``: ``model.safetensors`` + ``config.json`` (rank 0, ``save_pretrained``),
``history.json`` (rank 0) and ``rank<r>.json`` with a checksum of every rank's final weights (they
must all agree).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .model import build_model, make_config
from .training import (
    TrainConfig,
    evaluate_bits_per_byte,
    get_batch,
    lr_at,
    make_optimizer,
    next_token_loss,
    save_pretrained_quietly,
    shakespeare_bytes,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", help="course_lib.model preset (default: tiny)")
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=16, help="sequences per rank per step")
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--out", default=None, help="folder for the model, history and checksums")
    return p.parse_args(argv)


def weights_checksum(model: torch.nn.Module) -> float:
    """A number that changes when any weight changes (sum of |w| * position-dependent factor)."""
    total = 0.0
    for i, p in enumerate(model.parameters()):
        total += float((p.detach().double().abs().sum()) * (i + 1))
    return total


def main(argv=None) -> None:
    args = parse_args(argv)
    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # share the CPU cores fairly

    cfg = TrainConfig(
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        block_size=args.block_size,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        progress=False,
    )
    train_ids = shakespeare_bytes("train")
    config = make_config(args.preset)
    if args.block_size > config.max_position_embeddings:
        config = make_config(args.preset, max_position_embeddings=args.block_size)
    model = build_model(config, seed=args.seed)
    ddp_model = DistributedDataParallel(model)  # broadcasts rank 0's weights to everyone
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(args.seed + rank)  # different data on each rank

    history, t0 = [], time.perf_counter()
    for step in range(cfg.max_steps):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_ids, cfg.batch_size, cfg.block_size, generator)
        loss = next_token_loss(ddp_model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces (averages) gradients here, overlapped with backward
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        # the mean loss over all ranks, for logging only
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss, op=dist.ReduceOp.AVG)
        tokens = (step + 1) * world * cfg.batch_size * cfg.block_size
        history.append(
            {
                "step": step + 1,
                "lr": lr,
                "train_loss": mean_loss.item(),
                "tokens_seen": tokens,
                "elapsed_s": time.perf_counter() - t0,
            }
        )
        if rank == 0 and ((step + 1) % 10 == 0 or step + 1 == cfg.max_steps):
            print(
                f"step {step + 1:4d}  loss {mean_loss.item():.3f}  "
                f"{tokens / (time.perf_counter() - t0):,.0f} tok/s (all ranks)",
                flush=True,
            )

    result = {"rank": rank, "world_size": world, "checksum": weights_checksum(model)}
    if rank == 0:
        val_bpb = evaluate_bits_per_byte(
            model,
            shakespeare_bytes("validation"),
            cfg.block_size,
            cfg.batch_size,
            max_batches=args.eval_batches,
        )
        result["val_bpb"] = val_bpb
        print(f"world_size {world}: validation {val_bpb:.3f} bits/byte", flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{rank}.json").write_text(json.dumps(result))
        if rank == 0:
            save_pretrained_quietly(model, out)
            (out / "history.json").write_text(json.dumps(history))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
