"""Fine-tuning, evaluation and SHAP targets of unit 5, measured in one run.

    HF_HUB_OFFLINE=1 python benchmarks/finetune.py            # default size (~6 min on 2 cores, first run)
    HF_HUB_OFFLINE=1 python benchmarks/finetune.py --quick    # tiny settings, a smoke test

Targets (issue 7): fine-tuned MiniLM test accuracy >= 0.80 at the default size; the linear
probe's accuracy reported with its bootstrap CI; one review explained by shap in < 30 s on
2 cores; additivity error <= 1e-4. The reference beside each model is the majority-class
baseline and a bag-of-words logistic regression on the same split. Last line: RESULT k=v ...
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    ap.add_argument("--max-evals", type=int, default=300, help="shap model calls per review")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")

    import shap
    import torch
    from transformers.utils import logging as hf_logging

    from course_lib import evaluation, interpret
    from course_lib.data import load_minilm, load_rotten_tomatoes
    from course_lib.finetune import (
        embed_texts,
        load_sentiment_classifier,
        predict_proba,
        train_bag_of_words,
        train_linear_probe,
    )

    hf_logging.set_verbosity_error()
    n_train, epochs, max_length = (64, 1, 64) if args.quick else (3000, 2, 64)
    ds = load_rotten_tomatoes()
    train = ds["train"].select(range(n_train))
    test = ds["test"].select(range(200)) if args.quick else ds["test"]
    y = np.array(test["label"])
    print(
        f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}, "
        f"train {n_train}, test {len(y)}"
    )

    majority = max(y.mean(), 1 - y.mean())
    bow = train_bag_of_words(train["text"], train["label"])
    bow_acc = float((bow.predict(test["text"]) == y).mean())

    t0 = time.perf_counter()
    enc_tok, encoder = load_minilm()
    probe = train_linear_probe(
        embed_texts(encoder, enc_tok, train["text"], max_length, progress=False), train["label"]
    )
    probe_pred = probe.predict(embed_texts(encoder, enc_tok, test["text"], max_length, progress=False))
    probe_s = time.perf_counter() - t0
    probe_ci = evaluation.bootstrap_ci(y, probe_pred, n_boot=1000)

    tok, model, info = load_sentiment_classifier(
        n_train, epochs, max_length, return_info=True, progress=False
    )
    ft_pred = (predict_proba(model, tok, test["text"], max_length)[:, 1] > 0.5).astype(int)
    ft_ci = evaluation.bootstrap_ci(y, ft_pred, n_boot=1000)
    paired = evaluation.paired_bootstrap(y, probe_pred, ft_pred, n_boot=1000)

    f = interpret.ClassifierLogOdds(model, tok, max_length=max_length)
    explainer = shap.Explainer(f, shap.maskers.Text(tok))
    review = "A gorgeous, moving film, though the ending drags and the jokes fall flat."
    explainer([review], max_evals=args.max_evals, silent=True)  # warm-up (first-call overheads)
    t0 = time.perf_counter()
    ex = explainer([review], max_evals=args.max_evals, silent=True)
    explain_s = time.perf_counter() - t0
    additivity = float(abs(ex.values[0].sum() + ex.base_values[0] - f([review])[0]))

    print(f"majority class      {majority:.3f}")
    print(f"bag of words        {bow_acc:.3f}")
    print(
        f"linear probe        {probe_ci['value']:.3f}  95% CI [{probe_ci['low']:.3f}, {probe_ci['high']:.3f}]"
        f"  ({probe_s:.0f} s incl. embeddings)"
    )
    print(
        f"fine-tuned MiniLM   {ft_ci['value']:.3f}  95% CI [{ft_ci['low']:.3f}, {ft_ci['high']:.3f}]"
        f"  (trained in {info['train_seconds']:.0f} s when first cached)"
    )
    print(f"fine-tuned - probe  {paired['diff']:+.3f}  95% CI [{paired['low']:+.3f}, {paired['high']:+.3f}]")
    print(f"shap Partition, {args.max_evals} evals: {explain_s:.1f} s, additivity error {additivity:.1e}")
    print(
        f"RESULT probe_acc={probe_ci['value']:.4f} probe_ci_low={probe_ci['low']:.4f} "
        f"probe_ci_high={probe_ci['high']:.4f} finetune_acc={ft_ci['value']:.4f} "
        f"bow_acc={bow_acc:.4f} majority_acc={majority:.4f} explain_seconds={explain_s:.2f} "
        f"additivity_error={additivity:.2e}"
    )


if __name__ == "__main__":
    main()
