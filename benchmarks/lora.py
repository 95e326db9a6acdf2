"""LoRA vs full fine-tuning of SmolLM2-135M-Instruct on the CPU, next to zero-shot (unit 7).

    HF_HUB_OFFLINE=1 python benchmarks/lora.py           # default size (~6-8 min on 2 cores)
    HF_HUB_OFFLINE=1 python benchmarks/lora.py --quick   # tiny settings, a smoke test

One run, the same data (Rotten Tomatoes split by movie, near-duplicates removed:
``course_lib.adapt.split_by_movie``), the same steps, batch, sequence length and gradient
checkpointing for both arms: full fine-tuning (every parameter, AdamW) and LoRA r=8 on
q_proj, v_proj (alpha 16). Each arm runs in its own fresh process, so its peak resident memory
is its own (the peak is measured around training, the loaded model included). Accuracy is
classification as generation (``adapt.predict_labels``: the likelier label word) on the held-out
split, with 95% bootstrap intervals; ``..._ci`` is the half-width.

Targets (issue 14): lora_trainable_frac <= 0.01, lora_peak_mem_ratio <= 0.6, lora_acc >=
zero_shot_acc + 0.10 and within 0.03 of full_ft_acc. Last line: RESULT k=v ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings


def run_arm(args) -> dict:
    """Train (or not) one arm in this process and return its measurements (JSON-able)."""
    import numpy as np
    import torch

    from course_lib import adapt
    from course_lib.data import load_rotten_tomatoes, load_smollm2

    torch.manual_seed(args.seed)
    tok, model = load_smollm2()
    split = adapt.split_by_movie(load_rotten_tomatoes(), args.n_train, args.n_test, seed=args.seed)
    train = adapt.sentiment_sft_examples(tok, split["train"]["text"], split["train"]["label"], args.seq_len)
    test = adapt.sentiment_sft_examples(tok, split["test"]["text"], split["test"]["label"], args.seq_len)
    prompts = [e["input_ids"][: e["prompt_len"]] for e in test]
    out = {"arm": args.arm, "split": split["report"]}
    if args.arm != "zero_shot":
        if args.arm == "lora":
            model = adapt.add_lora(
                model, r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"]
            )
            lr = args.lr_lora
        else:
            lr = args.lr_full
        out.update(adapt.trainable_parameters(model))
        with adapt.PeakMemory() as mem:
            run = adapt.train_sft(
                model,
                train,
                steps=args.steps,
                lr=lr,
                batch_size=args.batch_size,
                pad_id=tok.pad_token_id,
                seed=args.seed,
                gradient_checkpointing=True,
                progress=False,
            )
        out.update(
            peak_bytes=mem.peak,
            delta_bytes=mem.delta,
            method=mem.method,
            tokens_per_s=run["tokens_per_s"],
            seconds=run["seconds"],
            first_loss=run["losses"][0],
            last_loss=float(np.mean(run["losses"][-5:])),
        )
    out["pred"] = adapt.predict_labels(model, tok, prompts).tolist()
    out["y"] = [int(e["label"]) for e in test]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    ap.add_argument("--arm", choices=["zero_shot", "lora", "full"], help=argparse.SUPPRESS)
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-test", type=int, default=400)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--lr-lora", type=float, default=1e-3)
    ap.add_argument("--lr-full", type=float, default=3e-5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    if args.quick:
        args.n_train, args.n_test, args.steps, args.batch_size = 32, 32, 2, 4
    if args.arm:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        print(json.dumps(run_arm(args)))
        return

    import numpy as np

    from course_lib import evaluation

    passed = [a for a in sys.argv[1:] if a != "--quick"]
    if args.quick:
        passed += ["--n-train", "32", "--n-test", "32", "--steps", "2", "--batch-size", "4"]
    res = {}
    for arm in ("zero_shot", "lora", "full"):
        proc = subprocess.run(
            [sys.executable, __file__, "--arm", arm, *passed],
            capture_output=True,
            text=True,
            env=dict(os.environ),
        )
        if proc.returncode != 0:
            raise SystemExit(f"arm {arm} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        res[arm] = json.loads(proc.stdout.strip().splitlines()[-1])
    y = np.array(res["zero_shot"]["y"])
    ci = {}
    for arm, r in res.items():
        b = evaluation.bootstrap_ci(y, np.array(r["pred"]), n_boot=2000, seed=0)
        ci[arm] = (b["value"], (b["high"] - b["low"]) / 2, b["low"], b["high"])
    paired = evaluation.paired_bootstrap(
        y, np.array(res["full"]["pred"]), np.array(res["lora"]["pred"]), n_boot=2000
    )
    lo, fu = res["lora"], res["full"]
    print(
        f"torch threads from OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load {os.getloadavg()[0]:.1f}"
    )
    print(f"split: {res['zero_shot']['split']}")
    print(
        f"{args.steps} steps, batch {args.batch_size}, seq_len {args.seq_len}, gradient checkpointing in both arms"
    )
    for arm in ("zero_shot", "lora", "full"):
        v, h, a, b = ci[arm]
        extra = ""
        if arm != "zero_shot":
            r = res[arm]
            extra = (
                f"  trainable {r['trainable']:,} ({r['fraction']:.4f}), peak RSS {r['peak_bytes'] / 2**20:.0f} MiB "
                f"(+{r['delta_bytes'] / 2**20:.0f} in training, {r['method']}), {r['tokens_per_s']:.0f} tokens/s, "
                f"loss {r['first_loss']:.2f} -> {r['last_loss']:.2f}"
            )
        print(f"{arm:9s} acc {v:.3f} [{a:.3f}, {b:.3f}]{extra}")
    print(
        f"LoRA - full: {paired['diff']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}] (paired bootstrap)"
    )
    print(
        f"RESULT lora_trainable_frac={lo['fraction']:.5f} "
        f"lora_peak_mem_ratio={lo['peak_bytes'] / fu['peak_bytes']:.3f} "
        f"lora_tokens_per_s_ratio={lo['tokens_per_s'] / fu['tokens_per_s']:.3f} "
        f"lora_acc={ci['lora'][0]:.4f} lora_acc_ci={ci['lora'][1]:.4f} "
        f"zero_shot_acc={ci['zero_shot'][0]:.4f} zero_shot_acc_ci={ci['zero_shot'][1]:.4f} "
        f"full_ft_acc={ci['full'][0]:.4f} full_ft_acc_ci={ci['full'][1]:.4f}"
    )


if __name__ == "__main__":
    main()
