"""Unit tests for course_lib.evaluation: metrics agree with sklearn, intervals and tests behave."""

import numpy as np
import pytest
from sklearn import metrics as skm

from course_lib import evaluation as E


@pytest.fixture
def preds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.where(rng.random(400) < 0.8, y, 1 - y)  # 80% accurate
    return y, p


def test_metrics_match_sklearn(preds):
    y, p = preds
    ref = {
        "accuracy": skm.accuracy_score,
        "precision": skm.precision_score,
        "recall": skm.recall_score,
        "f1": skm.f1_score,
    }
    for name, fn in E.METRICS.items():
        assert fn(y, p) == pytest.approx(ref[name](y, p))
    table = E.metrics_with_ci(y, p, n_boot=200)
    assert list(table.index) == list(E.METRICS)
    assert (table["low"] <= table["value"]).all() and (table["value"] <= table["high"]).all()


def test_bootstrap_ci_width_shrinks_with_n(preds):
    y, p = preds
    small = E.bootstrap_ci(y[:50], p[:50], n_boot=500)
    large = E.bootstrap_ci(y, p, n_boot=500)
    assert small["high"] - small["low"] > large["high"] - large["low"]
    assert large["low"] < 0.8 < large["high"]
    # deterministic given the seed
    assert E.bootstrap_ci(y, p, n_boot=200, seed=3) == E.bootstrap_ci(y, p, n_boot=200, seed=3)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same length"):
        E.bootstrap_ci([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        E.bootstrap_ci([], [])
    with pytest.raises(ValueError, match="0/1"):
        E.bootstrap_ci([0, 2], [0, 1])
    with pytest.raises(ValueError, match="n_boot"):
        E.bootstrap_ci([0, 1], [0, 1], n_boot=10)
    with pytest.raises(ValueError, match="metric"):
        E.bootstrap_ci([0, 1], [0, 1], metric="auc")
    with pytest.raises(ValueError, match="logits"):
        E.calibration_table([0, 1], [0.2, 3.0])


def test_calibration_perfect_and_overconfident():
    rng = np.random.default_rng(1)
    prob = rng.random(20000)
    y = (rng.random(20000) < prob).astype(int)
    assert E.expected_calibration_error(y, prob) < 0.02
    over = np.where(prob > 0.5, 1.0, 0.0) * 0.999 + 0.0005  # says 0/1, right ~75% of the time
    assert E.expected_calibration_error(y, over) > 0.2
    t = E.calibration_table(y, prob, n_bins=5)
    assert len(t) == 5 and t["count"].sum() == 20000


def test_paired_tests_detect_a_real_difference(preds):
    y, a = preds
    b = a.copy()
    wrong = np.flatnonzero(a != y)
    b[wrong[: len(wrong) // 2]] = y[wrong[: len(wrong) // 2]]  # B fixes half of A's mistakes
    res = E.paired_bootstrap(y, a, b, n_boot=500)
    assert res["diff"] > 0 and res["low"] > 0 and res["p_value"] < 0.01
    m = E.mcnemar(y, a, b)
    assert m["a_only"] == 0 and m["b_only"] == len(wrong) // 2 and m["p_value"] < 0.001
    same = E.mcnemar(y, a, a)
    assert same["p_value"] == 1.0


def test_mcnemar_matches_binomial_test():
    from scipy.stats import binomtest

    y = np.zeros(30, int)
    a = np.r_[np.zeros(20), np.ones(10)].astype(int)  # A wrong on last 10
    b = np.r_[np.ones(3), np.zeros(27)].astype(int)  # B wrong on first 3
    m = E.mcnemar(y, a, b)
    assert (m["a_only"], m["b_only"]) == (3, 10)
    assert m["p_value"] == pytest.approx(binomtest(3, 13, 0.5).pvalue)


def test_worst_mistakes():
    df = E.worst_mistakes(["a", "b", "c"], [1, 0, 1], [0.1, 0.9, 0.8], k=5)
    assert list(df["text"]) == ["a", "b"]  # both wrong with confidence 0.9


def test_bits_per_byte_uniform_byte_model():
    import torch

    class Uniform(torch.nn.Module):  # predicts all 256 bytes equally: exactly 8 bits per byte
        def forward(self, x):
            return type("Out", (), {"logits": torch.zeros(*x.shape, 256)})()

    class Bytes:
        def encode(self, text):
            return list(text.encode())

        def decode(self, ids):
            return bytes(ids).decode("utf-8", "replace")

    res = E.causal_lm_bits_per_byte(Uniform(), Bytes(), "to be or not to be " * 20, block_size=32)
    assert res["bits_per_byte"] == pytest.approx(8.0)
    with pytest.raises(ValueError, match="fewer than block_size"):
        E.causal_lm_bits_per_byte(Uniform(), Bytes(), "short", block_size=32)
