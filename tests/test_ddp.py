"""course_lib.ddp_train under torchrun: 2 CPU processes (gloo), tiny model, a few steps.

Checks that the ranks end with identical weights and that DDP with batch B on 2 ranks is the
same computation as one process with batch 2B (the two ranks' batches concatenated).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_lib.model import build_model, make_config
from course_lib.training import (
    TrainConfig,
    get_batch,
    load_checkpoint,
    lr_at,
    make_optimizer,
    next_token_loss,
    shakespeare_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH, BLOCK, SEED = 4, 4, 32, 0


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "course_lib.ddp_train",
        "--preset",
        "tiny",
        "--max-steps",
        str(STEPS),
        "--batch-size",
        str(BATCH),
        "--block-size",
        str(BLOCK),
        "--warmup-steps",
        "2",
        "--seed",
        str(SEED),
        "--eval-batches",
        "2",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return out, proc.stdout


def test_ranks_agree_and_rank0_saved_the_model(ddp_run):
    out, stdout = ddp_run
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["checksum"] == ranks[1]["checksum"], "DDP ranks ended with different weights"
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    assert history[-1]["tokens_seen"] == STEPS * 2 * BATCH * BLOCK
    assert "world_size 2" in stdout and ranks[0]["val_bpb"] < 8.5


def test_ddp_equals_one_process_with_the_concatenated_batch(ddp_run):
    out, _ = ddp_run
    cfg = TrainConfig(
        max_steps=STEPS,
        batch_size=BATCH,
        block_size=BLOCK,
        learning_rate=3e-3,
        warmup_steps=2,
        seed=SEED,
        progress=False,
    )
    ids = shakespeare_bytes("train")
    model = build_model(make_config("tiny"), seed=SEED)
    optimizer = make_optimizer(model, cfg)
    gens = [torch.Generator().manual_seed(SEED + r) for r in (0, 1)]
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        batches = [get_batch(ids, BATCH, BLOCK, g) for g in gens]
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        loss = next_token_loss(model, x, y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
    ddp_model = build_model(make_config("tiny"), seed=123)
    load_checkpoint(out, ddp_model)
    for (name, a), b in zip(model.named_parameters(), ddp_model.parameters()):
        torch.testing.assert_close(
            b, a, atol=2e-5, rtol=1e-4, msg=f"{name} differs between DDP and 1 process"
        )
