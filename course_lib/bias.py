"""Bias checks with statistics that make a claim honest.

Three kinds of probe, each with the statistics it needs:

* **Counterfactual template tests** (Equity Evaluation Corpus style) for a classifier:
  ``counterfactual_pairs`` fills the same template with a name from group A and one from group B,
  so each pair differs *only* in the name. A score per text gives paired differences
  ``d_i = score(a_i) - score(b_i)``; ``paired_gap`` reports their mean with a bootstrap CI
  (``mean_difference_ci``) and a sign-flip permutation p-value (``sign_flip_test``);
  ``per_template_gaps`` breaks the gap down by template with a Holm correction (``holm``);
  ``flip_rate`` is CheckList's invariance test (how often the predicted label changes).
* **Likelihood probes** for causal LMs: ``sentence_log_likelihoods`` scores whole sentences;
  ``crows_pairs_summary`` turns CrowS-Pairs preferences into a rate with a binomial CI
  (``binomial_ci``, ``binomial_test``); ``stereoset_scores`` computes StereoSet's LMS/SS/ICAT.
* **QA probes**: ``bbq_bias_score`` is BBQ's bias score.

``counterfactual_augment`` is the mitigation: counterfactual data augmentation (CDA) of a
fine-tuning set by swapping identity terms.

Example
-------
>>> pairs = counterfactual_pairs(["{name} was {word}."], ["Ann"], ["Bob"], words=["great"])
>>> pairs[["text_a", "text_b"]].values.tolist()
[['Ann was great.', 'Bob was great.']]
>>> r = paired_gap([0.9, 0.8, 0.7], [0.5, 0.4, 0.6], n_permutations=1000, n_boot=1000)
>>> round(r.gap, 3)
0.3
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from itertools import product

import numpy as np

from ._validation import check_positive_int
from .tokenization import encode_ids

__all__ = [
    "NAME_SLOT",
    "WORD_SLOT",
    "counterfactual_pairs",
    "paired_differences",
    "sign_flip_test",
    "mean_difference_ci",
    "holm",
    "GapResult",
    "paired_gap",
    "per_template_gaps",
    "flip_rate",
    "binomial_ci",
    "binomial_test",
    "sentence_log_likelihoods",
    "crows_pairs_summary",
    "stereoset_scores",
    "bbq_bias_score",
    "GENDER_WORD_PAIRS",
    "counterfactual_augment",
]

NAME_SLOT = "{name}"
WORD_SLOT = "{word}"


# --------------------------------------------------------------------------------------------
# Counterfactual templates
# --------------------------------------------------------------------------------------------


def _check_group(names, arg: str) -> list[str]:
    if isinstance(names, str):
        raise TypeError(f"{arg} must be a list of names, not a single str; wrap it: [{names!r}]")
    names = [str(n) for n in names]
    if not names:
        raise ValueError(f"{arg} is empty: a counterfactual test needs at least one name per group")
    return names


def counterfactual_pairs(templates, names_a, names_b, words=None, n_names: int | None = None, seed: int = 0):
    """Every template x word x name pair, filled once with a name from A and once from B.

    Names are shuffled (seeded) within each group and paired by position, so pair ``i`` always
    uses the same two names in every template: a pair differs *only* in the name.

    Parameters
    ----------
    templates : list of str, each with a ``{name}`` slot (and a ``{word}`` slot if ``words``)
    names_a, names_b : lists of str, the two groups (need not have the same length)
    words : list of str or None, fillers for ``{word}`` (e.g. emotion or review adjectives)
    n_names : int or None, use this many name pairs (default: as many as the smaller group)
    seed : int, the shuffle that pairs names

    Returns
    -------
    pandas.DataFrame, one row per pair: ``template_id`` (int), ``template``, ``word``,
    ``name_a``, ``name_b``, ``text_a``, ``text_b``;
    ``len = len(templates) * max(1, len(words)) * n_names``.

    Examples
    --------
    >>> counterfactual_pairs(["Hi {name}."], ["Ann", "Eve"], ["Bob"]).text_b.tolist()
    ['Hi Bob.']
    """
    import pandas as pd

    if isinstance(templates, str):
        raise TypeError(f"templates must be a list of str, not a single str; wrap it: [{templates!r}]")
    templates = list(templates)
    if not templates:
        raise ValueError("templates is empty: give at least one template with a {name} slot")
    names_a, names_b = _check_group(names_a, "names_a"), _check_group(names_b, "names_b")
    if words is not None:
        if isinstance(words, str):
            raise TypeError(f"words must be a list of str, not a single str; wrap it: [{words!r}]")
        words = [str(w) for w in words]
        if not words:
            raise ValueError("words is empty: pass None for templates without a {word} slot")
    for i, t in enumerate(templates):
        if not isinstance(t, str) or NAME_SLOT not in t:
            raise ValueError(
                f"templates[{i}] = {t!r} has no {NAME_SLOT} slot; every template must "
                f"contain {NAME_SLOT} exactly where the name goes"
            )
        if words is not None and WORD_SLOT not in t:
            raise ValueError(f"templates[{i}] = {t!r} has no {WORD_SLOT} slot but words were given")
        if words is None and WORD_SLOT in t:
            raise ValueError(f"templates[{i}] = {t!r} has a {WORD_SLOT} slot but words is None")
    n_max = min(len(names_a), len(names_b))
    if n_names is None:
        n_names = n_max
    if not isinstance(n_names, int) or not 1 <= n_names <= n_max:
        raise ValueError(f"n_names must be an int between 1 and {n_max} (the smaller group), got {n_names!r}")
    rng = np.random.default_rng(seed)
    a = [names_a[i] for i in rng.permutation(len(names_a))[:n_names]]
    b = [names_b[i] for i in rng.permutation(len(names_b))[:n_names]]
    rows = []
    for (tid, t), w, (na, nb) in product(enumerate(templates), words or [None], zip(a, b)):
        filled = t if w is None else t.replace(WORD_SLOT, w)
        rows.append(
            {
                "template_id": tid,
                "template": t,
                "word": w,
                "name_a": na,
                "name_b": nb,
                "text_a": filled.replace(NAME_SLOT, na),
                "text_b": filled.replace(NAME_SLOT, nb),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Paired statistics
# --------------------------------------------------------------------------------------------


def _as_1d(x, arg: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{arg} must be 1-D (one value per pair), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{arg} is empty: need at least one pair")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{arg} contains NaN or inf at positions {np.flatnonzero(~np.isfinite(arr))[:5]}")
    return arr


def paired_differences(scores_a, scores_b) -> np.ndarray:
    """``scores_a - scores_b`` after checking the two are paired (same 1-D length, finite).

    Returns np.ndarray (N,) float64.
    """
    a, b = _as_1d(scores_a, "scores_a"), _as_1d(scores_b, "scores_b")
    if a.shape != b.shape:
        raise ValueError(
            f"scores_a and scores_b must be paired (same length), got {a.size} and "
            f"{b.size}; score both texts of every pair"
        )
    return a - b


def sign_flip_test(
    diffs, n_permutations: int = 10_000, seed: int = 0, alternative: str = "two-sided"
) -> float:
    """Paired permutation test of "mean difference = 0" by random sign flips.

    Under the null hypothesis that the group label does not matter, each pair's two texts are
    exchangeable, so each difference is as likely to be ``+d`` as ``-d``. The p-value is the share
    of sign-flipped datasets whose mean is at least as extreme as the observed one. With
    ``2**N <= n_permutations`` every sign pattern is enumerated (an exact test); otherwise
    ``n_permutations`` random patterns are drawn and ``p = (1 + hits) / (1 + n_permutations)``.

    Parameters
    ----------
    diffs : (N,) paired differences
    n_permutations : int, Monte-Carlo draws
    seed : int
    alternative : "two-sided", "greater" (mean > 0) or "less"

    Returns
    -------
    float in (0, 1]

    Examples
    --------
    >>> sign_flip_test([1.0, 2.0, 3.0])      # 8 sign patterns, 2 as extreme (+++ and ---)
    0.25
    """
    d = _as_1d(diffs, "diffs")
    check_positive_int("n_permutations", n_permutations)
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")

    def stat(m):
        return np.abs(m) if alternative == "two-sided" else (m if alternative == "greater" else -m)

    observed = stat(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))  # ties must count as "as extreme"
    n = d.size
    if n <= 20 and 2**n <= n_permutations:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # (2**N, N) of +-1
        return float(np.mean(stat(signs @ d / n) >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_permutations, 1000):  # chunks keep memory at 1000 x N
        k = min(1000, n_permutations - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(k, n))
        hits += int(np.sum(stat(signs @ d / n) >= observed - tol))
    return (1 + hits) / (1 + n_permutations)


def mean_difference_ci(
    diffs, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0, clusters=None
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean paired difference.

    Resamples whole *pairs* (the difference ``d_i`` travels as a unit, so the pairing is kept).
    With ``clusters`` (e.g. template ids) whole clusters are resampled instead: use it when pairs
    from the same template are not independent, and expect a wider, more honest interval.

    Parameters
    ----------
    diffs : (N,) paired differences
    n_boot : int, bootstrap resamples
    confidence : float in (0, 1)
    seed : int
    clusters : (N,) labels or None

    Returns
    -------
    (low, high) floats

    Examples
    --------
    >>> lo, hi = mean_difference_ci([0.1, 0.2, 0.3, 0.4], n_boot=2000)
    >>> 0.1 <= lo < 0.25 < hi <= 0.4
    True
    """
    d = _as_1d(diffs, "diffs")
    check_positive_int("n_boot", n_boot)
    if not isinstance(confidence, float) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a float strictly between 0 and 1, got {confidence!r}")
    rng = np.random.default_rng(seed)
    alpha = 1.0 - confidence
    if clusters is None:
        means = np.empty(n_boot)
        for start in range(0, n_boot, 1000):
            k = min(1000, n_boot - start)
            idx = rng.integers(0, d.size, size=(k, d.size))
            means[start : start + k] = d[idx].mean(axis=1)
    else:
        labels = np.asarray(clusters)
        if labels.shape != d.shape:
            raise ValueError(
                f"clusters must have one label per difference ({d.size}), got shape {labels.shape}"
            )
        uniq, inverse = np.unique(labels, return_inverse=True)
        sums = np.bincount(inverse, weights=d)  # (C,) sum of differences per cluster
        counts = np.bincount(inverse).astype(float)  # (C,) pairs per cluster
        idx = rng.integers(0, uniq.size, size=(n_boot, uniq.size))
        means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control, any dependence).

    Sort the m p-values ascending, multiply the k-th smallest by ``m - k + 1``, enforce that the
    adjusted values never decrease, clip at 1, and return them in the original order. Reject the
    hypotheses whose adjusted p-value is below alpha.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03]).tolist()
    [0.03, 0.06, 0.06]
    """
    p = _as_1d(pvalues, "pvalues")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"pvalues must lie in [0, 1], got min {p.min()} max {p.max()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return np.round(out, 15)


@dataclass
class GapResult:
    """A paired gap ``mean(score_a - score_b)`` with its uncertainty."""

    gap: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """True when the CI lies entirely on one side of 0."""
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"gap {self.gap:+.4f} ({self.confidence:.0%} CI {self.ci_low:+.4f} to "
            f"{self.ci_high:+.4f}), p = {self.p_value:.4f}, n = {self.n} pairs"
        )


def paired_gap(
    scores_a,
    scores_b,
    n_permutations: int = 10_000,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    clusters=None,
) -> GapResult:
    """Mean paired difference with a bootstrap CI and a sign-flip p-value.

    Parameters
    ----------
    scores_a, scores_b : (N,) scores of the two texts of each pair (e.g. P(positive))
    n_permutations, n_boot, confidence, seed : see ``sign_flip_test`` and ``mean_difference_ci``
    clusters : (N,) or None, resample clusters (e.g. templates) in the bootstrap

    Returns
    -------
    GapResult(gap, ci_low, ci_high, p_value, n, confidence)
    """
    d = paired_differences(scores_a, scores_b)
    lo, hi = mean_difference_ci(d, n_boot=n_boot, confidence=confidence, seed=seed, clusters=clusters)
    p = sign_flip_test(d, n_permutations=n_permutations, seed=seed)
    return GapResult(float(d.mean()), lo, hi, float(p), int(d.size), confidence)


def per_template_gaps(
    scores_a,
    scores_b,
    template_ids,
    n_permutations: int = 10_000,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    alpha: float = 0.05,
):
    """``paired_gap`` within each template, with Holm-adjusted p-values across templates.

    Testing each of m templates at level alpha flags one by chance with probability up to
    ``1 - (1 - alpha)**m``; Holm's correction keeps that family-wise error at alpha.

    Returns
    -------
    pandas.DataFrame indexed by template id: ``n``, ``gap``, ``ci_low``, ``ci_high``,
    ``p_value``, ``p_holm``, ``significant`` (``p_holm < alpha``).
    """
    import pandas as pd

    d = paired_differences(scores_a, scores_b)
    t = np.asarray(template_ids)
    if t.shape != d.shape:
        raise ValueError(f"template_ids must have one id per pair ({d.size}), got shape {t.shape}")
    rows = []
    for tid in pd.unique(t):
        mask = t == tid
        r = paired_gap(
            d[mask],
            np.zeros(mask.sum()),
            n_permutations=n_permutations,
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
        )
        rows.append(
            {
                "template_id": tid,
                "n": r.n,
                "gap": r.gap,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "p_value": r.p_value,
            }
        )
    df = pd.DataFrame(rows).set_index("template_id")
    df["p_holm"] = holm(df["p_value"].to_numpy())
    df["significant"] = df["p_holm"] < alpha
    return df


def flip_rate(labels_a, labels_b) -> float:
    """CheckList invariance: the share of pairs whose predicted label changes under the swap.

    Examples
    --------
    >>> flip_rate([1, 1, 0, 0], [1, 0, 0, 0])
    0.25
    """
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"labels_a and labels_b must be non-empty 1-D and paired, got shapes {a.shape} and {b.shape}"
        )
    return float(np.mean(a != b))


# --------------------------------------------------------------------------------------------
# Binomial rates (CrowS-Pairs, StereoSet)
# --------------------------------------------------------------------------------------------


def binomial_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n`` (good even near 0, 1 and for small n).

    Examples
    --------
    >>> [round(x, 3) for x in binomial_ci(60, 100)]
    [0.502, 0.691]
    """
    check_positive_int("n", n)
    if not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ValueError(f"k must be an int between 0 and n={n}, got {k!r}")
    if not isinstance(confidence, float) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a float strictly between 0 and 1, got {confidence!r}")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends, no 1e-17 rounding residue
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def binomial_test(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test p-value of ``k`` successes in ``n`` trials against ``p``."""
    from scipy.stats import binomtest

    check_positive_int("n", n)
    if not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ValueError(f"k must be an int between 0 and n={n}, got {k!r}")
    return float(binomtest(int(k), int(n), p).pvalue)


# --------------------------------------------------------------------------------------------
# Causal-LM likelihoods
# --------------------------------------------------------------------------------------------


def sentence_log_likelihoods(
    model,
    tokenizer,
    sentences,
    prefix_token_id: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
):
    """Log-likelihood of each whole sentence under a causal LM, in nats.

    ``log p(s) = sum_t log p(x_t | prefix, x_<t)`` over *every* token of the sentence: a prefix
    token (BOS) is prepended so the first word is scored too, and padding is never scored.

    Parameters
    ----------
    model : a causal LM returning ``.logits`` of shape (B, T, V) (e.g. ``LlamaForCausalLM``)
    tokenizer : a transformers tokenizer (special tokens are not added) or anything with
        ``.encode(text) -> list[int]``
    sentences : list of str
    prefix_token_id : int or None, defaults to ``tokenizer.bos_token_id``, else ``eos_token_id``
    batch_size : int

    Returns
    -------
    (log_likelihoods, n_tokens): np.ndarray (N,) float64 (nats, <= 0) and np.ndarray (N,) int
    (scored tokens per sentence; divide for a per-token average).
    """
    import torch
    from tqdm.auto import tqdm

    if isinstance(sentences, str):
        raise TypeError("sentences must be a list of str, not a single str; wrap it in a list")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("sentences is empty")
    check_positive_int("batch_size", batch_size)
    if prefix_token_id is None:
        prefix_token_id = getattr(tokenizer, "bos_token_id", None)
        if prefix_token_id is None:
            prefix_token_id = getattr(tokenizer, "eos_token_id", None)
        if prefix_token_id is None:
            raise ValueError(
                "the tokenizer has no bos_token_id or eos_token_id: pass "
                "prefix_token_id (a token that starts a text, e.g. a newline)"
            )
    ids = [[int(prefix_token_id)] + encode_ids(tokenizer, s) for s in sentences]
    for s, x in zip(sentences, ids):
        if len(x) < 2:
            raise ValueError(f"sentence {s!r} encodes to no tokens")
    order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths -> less padding
    ll = np.zeros(len(ids))
    counts = np.zeros(len(ids), dtype=int)
    from .model import split_lm_head, target_logprobs

    body, head = split_lm_head(model)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(ids), batch_size), desc="scoring", disable=not progress, leave=False):
            batch = order[start : start + batch_size]
            width = max(len(ids[i]) for i in batch)
            x = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):  # right padding: real tokens keep positions 0..L-1
                x[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            if body is not None:  # logits a chunk of positions at a time, never (B, T, V) at once
                hidden = body(input_ids=x, attention_mask=mask).last_hidden_state[:, :-1]  # predicts x[:, 1:]
                lp, _ = target_logprobs(head, hidden.reshape(-1, hidden.shape[-1]), x[:, 1:].reshape(-1))
                tok_lp = lp.view(len(batch), width - 1)  # (B, T-1)
            else:
                logits = model(input_ids=x, attention_mask=mask).logits.float()  # (B, T, V)
                logp = torch.log_softmax(logits[:, :-1], dim=-1)  # predicts x[:, 1:]
                tok_lp = logp.gather(-1, x[:, 1:, None]).squeeze(-1)  # (B, T-1)
            scored = mask[:, 1:].float()
            ll[batch] = (tok_lp * scored).sum(1).double().numpy()
            counts[batch] = scored.sum(1).long().numpy()
    model.train(was_training)
    return ll, counts


def crows_pairs_summary(ll_more, ll_less, groups=None, confidence: float = 0.95):
    """CrowS-Pairs metric: how often the more-stereotypical sentence is the more likely one.

    An unbiased model would sit at 50%. Reported with a Wilson CI and an exact binomial test
    against 50%, overall and per group (bias type). Ties count as not preferring the stereotype.

    Parameters
    ----------
    ll_more, ll_less : (N,) log-likelihoods of ``sent_more`` and ``sent_less``
    groups : (N,) labels (e.g. ``bias_type``) or None

    Returns
    -------
    pandas.DataFrame with rows ``all`` (and each group): ``n``, ``stereo_rate``, ``ci_low``,
    ``ci_high``, ``p_value``, ``mean_ll_diff`` (nats).
    """
    import pandas as pd

    diff = paired_differences(ll_more, ll_less)
    keys = ["all"]
    if groups is not None:
        g = np.asarray(groups, dtype=object)
        if g.shape != diff.shape:
            raise ValueError(f"groups must have one label per pair ({diff.size}), got shape {g.shape}")
        keys += sorted(set(g.tolist()), key=str)
    rows = []
    for key in keys:
        mask = np.ones(diff.size, bool) if key == "all" else (g == key)
        k, n = int((diff[mask] > 0).sum()), int(mask.sum())
        lo, hi = binomial_ci(k, n, confidence)
        rows.append(
            {
                "group": key,
                "n": n,
                "stereo_rate": k / n,
                "ci_low": lo,
                "ci_high": hi,
                "p_value": binomial_test(k, n),
                "mean_ll_diff": float(diff[mask].mean()),
            }
        )
    return pd.DataFrame(rows).set_index("group")


def stereoset_scores(ll_stereo, ll_anti, ll_unrelated) -> dict:
    """StereoSet's scores (Nadeem et al. 2021) from per-item sentence scores.

    * ``lms`` language-modelling score: % of (meaningful, unrelated) comparisons where the
      meaningful sentence (stereotype or anti-stereotype) scores higher (ideal 100);
    * ``ss`` stereotype score: % of items where the stereotype beats the anti-stereotype
      (ideal 50);
    * ``icat = lms * min(ss, 100 - ss) / 50`` (ideal 100; a random model gets 50).

    Micro-averaged over items (the paper averages over target terms first). Use per-token
    average log-likelihoods: the three sentences differ in one word of varying token length.

    Examples
    --------
    >>> stereoset_scores([-1, -1], [-2, -2], [-3, -3])
    {'lms': 100.0, 'ss': 100.0, 'icat': 0.0, 'n': 2}
    """
    s = _as_1d(ll_stereo, "ll_stereo")
    a = _as_1d(ll_anti, "ll_anti")
    u = _as_1d(ll_unrelated, "ll_unrelated")
    if not s.shape == a.shape == u.shape:
        raise ValueError(
            f"ll_stereo, ll_anti and ll_unrelated must have the same length, got {s.size}, {a.size}, {u.size}"
        )
    lms = 100.0 * (np.sum(s > u) + np.sum(a > u)) / (2 * s.size)
    ss = 100.0 * np.mean(s > a)
    icat = lms * min(ss, 100.0 - ss) / 50.0
    return {"lms": float(lms), "ss": float(ss), "icat": float(icat), "n": int(s.size)}


def bbq_bias_score(n_biased: int, n_non_unknown: int, accuracy: float | None = None) -> float:
    """BBQ's bias score (Parrish et al. 2022), in [-1, 1] (0 = no bias).

    ``s_dis = 2 * n_biased / n_non_unknown - 1`` where ``n_biased`` counts answers that match the
    social bias and ``n_non_unknown`` all answers other than "unknown". In *ambiguous* contexts
    (pass ``accuracy``, the share answered correctly, i.e. "unknown") it is scaled by the error
    rate: ``s_amb = (1 - accuracy) * s_dis``, so a model that rightly says "unknown" scores 0.

    Examples
    --------
    >>> bbq_bias_score(30, 40)
    0.5
    >>> bbq_bias_score(30, 40, accuracy=0.8)
    0.1
    """
    check_positive_int("n_non_unknown", n_non_unknown)
    if not isinstance(n_biased, (int, np.integer)) or not 0 <= n_biased <= n_non_unknown:
        raise ValueError(
            f"n_biased must be an int between 0 and n_non_unknown={n_non_unknown}, got {n_biased!r}"
        )
    s_dis = 2.0 * n_biased / n_non_unknown - 1.0
    if accuracy is None:
        return s_dis
    if not 0.0 <= float(accuracy) <= 1.0:
        raise ValueError(f"accuracy must lie in [0, 1], got {accuracy!r}")
    return round((1.0 - float(accuracy)) * s_dis, 12)


# --------------------------------------------------------------------------------------------
# Mitigation: counterfactual data augmentation
# --------------------------------------------------------------------------------------------

# Bidirectional swaps (Lu et al. 2020; Maudslay et al. 2019). "her" is ambiguous (him/his): we
# map it to "his", a known imperfection of word-level CDA.
GENDER_WORD_PAIRS = (
    ("he", "she"),
    ("him", "her"),
    ("his", "her"),
    ("himself", "herself"),
    ("man", "woman"),
    ("men", "women"),
    ("boy", "girl"),
    ("boys", "girls"),
    ("father", "mother"),
    ("fathers", "mothers"),
    ("son", "daughter"),
    ("sons", "daughters"),
    ("brother", "sister"),
    ("brothers", "sisters"),
    ("husband", "wife"),
    ("husbands", "wives"),
    ("king", "queen"),
    ("actor", "actress"),
    ("actors", "actresses"),
    ("mr", "mrs"),
    ("male", "female"),
    ("gentleman", "lady"),
    ("gentlemen", "ladies"),
    ("guy", "gal"),
    ("uncle", "aunt"),
    ("nephew", "niece"),
    ("boyfriend", "girlfriend"),
    ("dad", "mom"),
    ("hero", "heroine"),
)


def counterfactual_augment(texts, word_pairs=GENDER_WORD_PAIRS, name_pairs=()):
    """Swap identity terms in both directions; return the texts that changed and their swaps.

    Parameters
    ----------
    texts : list of str
    word_pairs : pairs (x, y): every whole-word x becomes y and y becomes x (case kept for a
        capitalised first letter); when a word appears in several pairs the first pair wins
    name_pairs : pairs of first names swapped the same way (name-based CDA)

    Returns
    -------
    (indices, swapped): the positions of texts that contained a swappable term and their
    counterfactual versions (append them to the training set with the same labels).

    Examples
    --------
    >>> counterfactual_augment(["He loved his mother.", "A film."])
    ([0], ['She loved her father.'])
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of str, not a single str; wrap it in a list")
    mapping: dict[str, str] = {}
    for x, y in list(word_pairs) + list(name_pairs):
        x, y = str(x).lower(), str(y).lower()
        mapping.setdefault(x, y)
        mapping.setdefault(y, x)
    if not mapping:
        raise ValueError("word_pairs and name_pairs are both empty: nothing to swap")
    pattern = re.compile(
        r"\b(" + "|".join(sorted(map(re.escape, mapping), key=len, reverse=True)) + r")\b",
        flags=re.IGNORECASE,
    )

    def swap(m):
        word = m.group(0)
        new = mapping[word.lower()]
        if word.isupper() and len(word) > 1:
            return new.upper()
        return new.capitalize() if word[0].isupper() else new

    indices, swapped = [], []
    for i, t in enumerate(texts):
        new, n = pattern.subn(swap, str(t))
        if n:
            indices.append(i)
            swapped.append(new)
    return indices, swapped
