"""Evaluating classifiers and language models honestly: uncertainty, calibration, paired tests.

A test accuracy is an estimate from a finite sample; report it with a confidence interval
(``bootstrap_ci``, ``metrics_with_ci``). Two models scored on the same test set make *paired*
errors, so compare them with a paired test (``paired_bootstrap``, ``mcnemar``), which is far more
sensitive than checking whether two separate intervals overlap. A classifier's probabilities are
only useful if they are calibrated (``calibration_table``, ``expected_calibration_error``).
For language models, ``causal_lm_bits_per_byte`` gives a score that does not depend on the
tokenizer, so models with different vocabularies can be compared.

Example
-------
>>> y, pred = [1, 0, 1, 1], [1, 0, 0, 1]
>>> round(bootstrap_ci(y, pred, n_boot=200)["value"], 2)
0.75
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "METRICS",
    "bootstrap_ci",
    "metrics_with_ci",
    "calibration_table",
    "expected_calibration_error",
    "paired_bootstrap",
    "mcnemar",
    "worst_mistakes",
    "causal_lm_bits_per_byte",
]


def _accuracy(y, p):
    return float((y == p).mean())


def _precision(y, p):
    tp, fp = np.sum((p == 1) & (y == 1)), np.sum((p == 1) & (y == 0))
    return float(tp / (tp + fp)) if tp + fp else 0.0


def _recall(y, p):
    tp, fn = np.sum((p == 1) & (y == 1)), np.sum((p == 0) & (y == 1))
    return float(tp / (tp + fn)) if tp + fn else 0.0


def _f1(y, p):
    pr, rc = _precision(y, p), _recall(y, p)
    return 2 * pr * rc / (pr + rc) if pr + rc else 0.0


# Binary metrics for label 1 (the "positive" class), written out so the bootstrap loop is fast
# and so a learner can read them; they agree with sklearn.metrics (tested).
METRICS = {"accuracy": _accuracy, "precision": _precision, "recall": _recall, "f1": _f1}


def _check_pair(y_true, y_other, name: str = "y_pred", binary: bool = True):
    y = np.asarray(y_true)
    o = np.asarray(y_other)
    if y.ndim != 1 or o.ndim != 1:
        raise ValueError(f"y_true and {name} must be 1-D, got shapes {y.shape} and {o.shape}")
    if len(y) != len(o):
        raise ValueError(f"y_true and {name} must have the same length, got {len(y)} and {len(o)}")
    if len(y) == 0:
        raise ValueError("y_true is empty; need at least one example")
    if binary and not (np.isin(y, (0, 1)).all() and np.isin(o, (0, 1)).all()):
        raise ValueError(f"y_true and {name} must hold 0/1 labels only")
    return y.astype(np.int64), o


def _resolve_metric(metric):
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)} or a callable, got {metric!r}")
    return METRICS[metric]


def _check_boot(n_boot, alpha):
    if not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100 (1,000 or more for a report), got {n_boot!r}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), e.g. 0.05 for a 95% interval, got {alpha!r}")


def bootstrap_ci(
    y_true, y_pred, metric="accuracy", n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict:
    """Percentile bootstrap confidence interval of a metric on a test set.

    Resample the test set with replacement ``n_boot`` times, recompute the metric, take the
    ``alpha/2`` and ``1 - alpha/2`` quantiles. It answers "how different could this number be
    on another test set of the same size from the same distribution?"

    Parameters
    ----------
    y_true, y_pred : arrays (N,) of 0/1
    metric : "accuracy", "precision", "recall", "f1" or a callable ``f(y_true, y_pred) -> float``
    n_boot : int >= 100, resamples
    alpha : float, 0.05 gives a 95% interval
    seed : int

    Returns
    -------
    dict ``{"value", "low", "high", "std"}`` (``std`` = bootstrap standard error)
    """
    y, p = _check_pair(y_true, y_pred)
    p = p.astype(np.int64)
    fn = _resolve_metric(metric)
    _check_boot(n_boot, alpha)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    stats = np.array([fn(y[i], p[i]) for i in idx])
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return {"value": fn(y, p), "low": float(low), "high": float(high), "std": float(stats.std())}


def metrics_with_ci(y_true, y_pred, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0):
    """Accuracy, precision, recall and F1 with bootstrap intervals, as a ``pandas.DataFrame``
    (index = metric; columns value, low, high, std)."""
    import pandas as pd

    rows = {name: bootstrap_ci(y_true, y_pred, name, n_boot, alpha, seed) for name in METRICS}
    return pd.DataFrame(rows).T[["value", "low", "high", "std"]]


def _check_probs(y_true, prob):
    y, p = _check_pair(y_true, prob, "prob", binary=False)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold 0/1 labels only")
    p = p.astype(np.float64)
    if np.any((p < 0) | (p > 1)) or np.any(~np.isfinite(p)):
        raise ValueError("prob must hold probabilities of class 1 in [0, 1] (pass probs[:, 1], not logits)")
    return y, p


def calibration_table(y_true, prob, n_bins: int = 10):
    """Reliability table: in each confidence bin, the mean predicted P(1) against the observed
    fraction of 1s. A calibrated model has the two equal (the diagonal of a reliability diagram).

    Parameters
    ----------
    y_true : (N,) 0/1 labels
    prob : (N,) predicted probability of label 1
    n_bins : int, equal-width bins on [0, 1]

    Returns
    -------
    ``pandas.DataFrame`` with one row per non-empty bin: ``bin_low``, ``bin_high``, ``count``,
    ``mean_prob``, ``frac_positive``.
    """
    import pandas as pd

    y, p = _check_probs(y_true, prob)
    if not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an int >= 2, got {n_bins!r}")
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = which == b
        if m.any():
            rows.append(
                {
                    "bin_low": edges[b],
                    "bin_high": edges[b + 1],
                    "count": int(m.sum()),
                    "mean_prob": float(p[m].mean()),
                    "frac_positive": float(y[m].mean()),
                }
            )
    return pd.DataFrame(rows)


def expected_calibration_error(y_true, prob, n_bins: int = 10) -> float:
    """ECE: the count-weighted mean gap |mean predicted P(1) - observed frequency| over bins
    (0 = perfectly calibrated; same units as a probability)."""
    t = calibration_table(y_true, prob, n_bins)
    return float((t["count"] * (t["mean_prob"] - t["frac_positive"]).abs()).sum() / t["count"].sum())


def paired_bootstrap(
    y_true, pred_a, pred_b, metric="accuracy", n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict:
    """Paired bootstrap of ``metric(B) - metric(A)`` on one test set.

    Each resample draws the *same* examples for both models, so the difficulty of the examples
    cancels and only the models' difference remains.

    Returns
    -------
    dict ``{"diff", "low", "high", "p_value"}``: observed difference, its interval, and a
    two-sided bootstrap p-value for "no difference" (twice the smaller tail mass at 0).
    """
    y, a = _check_pair(y_true, pred_a, "pred_a")
    _, b = _check_pair(y_true, pred_b, "pred_b")
    a, b = a.astype(np.int64), b.astype(np.int64)
    fn = _resolve_metric(metric)
    _check_boot(n_boot, alpha)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    diffs = np.array([fn(y[i], b[i]) - fn(y[i], a[i]) for i in idx])
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean()))
    return {"diff": fn(y, b) - fn(y, a), "low": float(low), "high": float(high), "p_value": float(p)}


def mcnemar(y_true, pred_a, pred_b) -> dict:
    """Exact McNemar test: do models A and B have the same error rate on this test set?

    Only the discordant examples matter: ``a_only`` (A right, B wrong) and ``b_only``
    (B right, A wrong). Under "same error rate" each discordant example is a fair coin flip, so
    the p-value is a two-sided binomial test.

    Returns
    -------
    dict ``{"a_only", "b_only", "p_value"}``
    """
    y, a = _check_pair(y_true, pred_a, "pred_a")
    _, b = _check_pair(y_true, pred_b, "pred_b")
    ra, rb = a == y, b == y
    n01, n10 = int(np.sum(ra & ~rb)), int(np.sum(~ra & rb))
    n, k = n01 + n10, min(n01, n10)
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p_value": 1.0}
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return {"a_only": n01, "b_only": n10, "p_value": float(min(1.0, 2 * tail))}


def worst_mistakes(texts, y_true, prob, k: int = 10):
    """The ``k`` most confident wrong predictions, as a ``pandas.DataFrame`` sorted by the
    probability the model gave to the wrong label (columns text, label, p_fresh, confidence)."""
    import pandas as pd

    y, p = _check_probs(y_true, prob)
    texts = list(texts)
    if len(texts) != len(y):
        raise ValueError(f"texts and y_true must have the same length, got {len(texts)} and {len(y)}")
    wrong_conf = np.where(y == 1, 1 - p, p)  # probability put on the wrong label
    df = pd.DataFrame({"text": texts, "label": y, "p_fresh": p, "confidence": wrong_conf})
    return df[df["confidence"] > 0.5].sort_values("confidence", ascending=False).head(k)


def causal_lm_bits_per_byte(
    model,
    tokenizer,
    text: str,
    block_size: int = 256,
    max_blocks: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> dict:
    """Bits per UTF-8 byte of ``text`` under a causal LM with any tokenizer.

    Perplexity per *token* cannot compare models whose tokenizers differ (a model with longer
    tokens predicts fewer, harder tokens). The total negative log-likelihood of the text, in
    bits, divided by its number of bytes can: it is the code length a model would need to
    compress the text.

    The text is tokenized once and cut into non-overlapping blocks of ``block_size`` tokens;
    the first token of each block is conditioned on nothing and is not scored, and only the
    bytes of the scored tokens are counted.

    Parameters
    ----------
    model : transformers causal LM (``model(input_ids).logits`` of shape (B, T, V))
    tokenizer : a transformers tokenizer, or anything with ``encode(text) -> list[int]`` and
        ``decode(ids) -> str`` (e.g. the course's byte tokenizer)
    text : str
    block_size : int, tokens per block
    max_blocks : int or None, score only the first blocks (quick runs)
    batch_size : int or None, blocks per forward pass; None picks the largest batch whose
        logits (batch x block_size x vocabulary floats) stay under 64 MB, so a 49k-token
        vocabulary scores one block at a time while a byte-level model takes hundreds

    Returns
    -------
    dict ``{"bits_per_byte", "bits_per_token", "tokens", "bytes"}``
    """
    import torch
    from tqdm.auto import tqdm

    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty str")
    if not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"block_size must be an int >= 2, got {block_size!r}")
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:  # a plain tokenizer (e.g. training.ByteTokenizer) without that argument
        ids = tokenizer.encode(text)
    ids = torch.as_tensor(ids).long().reshape(-1)
    n_blocks = len(ids) // block_size
    if n_blocks == 0:
        raise ValueError(f"text has {len(ids)} tokens, fewer than block_size={block_size}")
    if max_blocks is not None:
        n_blocks = min(n_blocks, max_blocks)
    blocks = ids[: n_blocks * block_size].view(n_blocks, block_size)
    if batch_size is None:
        vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 50_000
        batch_size = max(1, 2**24 // (block_size * vocab))
    elif not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    total_nats, n_tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in tqdm(range(0, n_blocks, batch_size), desc="scoring", disable=not progress, leave=False):
            x = blocks[i : i + batch_size]
            logits = model(x).logits.float()  # (B, T, V)
            nll = torch.nn.functional.cross_entropy(  # no (B, T-1, V) copy
                logits.transpose(1, 2)[:, :, :-1], x[:, 1:], reduction="sum"
            )
            total_nats += float(nll)
            n_tokens += x[:, 1:].numel()
    scored_bytes = sum(len(tokenizer.decode(row[1:].tolist()).encode("utf-8")) for row in blocks)
    bits = total_nats / math.log(2)
    return {
        "bits_per_byte": bits / scored_bytes,
        "bits_per_token": bits / n_tokens,
        "tokens": n_tokens,
        "bytes": scored_bytes,
    }
