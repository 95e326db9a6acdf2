"""Unit tests of course_lib.bias and course_lib.model_card (fast, offline)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from course_lib import bias
from course_lib.model_card import format_estimate, model_card


# ---------------------------------------------------------------- counterfactual templates
def test_pairs_differ_only_in_the_name():
    df = bias.counterfactual_pairs(
        ["{name} is {word}.", "I met {name}; {word}!"],
        ["Ann", "Eve", "Zoe"],
        ["Bob", "Tom"],
        words=["good", "bad"],
    )
    assert len(df) == 2 * 2 * 2  # templates x words x min(group sizes)
    for r in df.itertuples():
        assert r.text_a.replace(r.name_a, "#") == r.text_b.replace(r.name_b, "#")
        assert r.word in r.text_a and r.name_a in ("Ann", "Eve", "Zoe")
    # the same name pairs are used in every template and word (paired design)
    pairs = df.groupby(["template_id", "word"])[["name_a", "name_b"]].apply(
        lambda g: tuple(map(tuple, g.values))
    )
    assert len(set(pairs)) == 1


def test_pairs_seeded_and_n_names():
    a = bias.counterfactual_pairs(["{name}."], list("ABCDE"), list("VWXYZ"), n_names=3, seed=1)
    b = bias.counterfactual_pairs(["{name}."], list("ABCDE"), list("VWXYZ"), n_names=3, seed=1)
    assert a.equals(b) and len(a) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(templates=["no slot here"], names_a=["A"], names_b=["B"]), "slot"),
        (dict(templates=["{name}"], names_a=[], names_b=["B"]), "names_a is empty"),
        (dict(templates=["{name}"], names_a=["A"], names_b=["B"], words=["x"]), "word"),
        (dict(templates=["{name} {word}"], names_a=["A"], names_b=["B"]), "words is None"),
        (dict(templates=["{name}"], names_a=["A"], names_b=["B"], n_names=2), "n_names"),
        (dict(templates=[], names_a=["A"], names_b=["B"]), "templates is empty"),
    ],
)
def test_pairs_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bias.counterfactual_pairs(**kwargs)


def test_pairs_single_string_is_a_type_error():
    with pytest.raises(TypeError, match="single str"):
        bias.counterfactual_pairs("{name}", ["A"], ["B"])
    with pytest.raises(TypeError, match="names_a"):
        bias.counterfactual_pairs(["{name}"], "Ann", ["B"])


# ---------------------------------------------------------------- paired statistics
def test_paired_differences_checks_pairing():
    with pytest.raises(ValueError, match="paired"):
        bias.paired_differences([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        bias.paired_differences([], [])
    with pytest.raises(ValueError, match="NaN"):
        bias.paired_differences([1, np.nan], [1, 2])


def exact_sign_flip(d):
    d = np.asarray(d, float)
    obs = abs(d.mean())
    stats = [abs(np.mean(np.array(s) * d)) for s in itertools.product([-1, 1], repeat=len(d))]
    return np.mean(np.array(stats) >= obs - 1e-12)


def test_sign_flip_exact_and_monte_carlo_agree():
    rng = np.random.default_rng(3)
    d = rng.normal(0.3, 1.0, size=12)
    exact = exact_sign_flip(d)
    assert bias.sign_flip_test(d, n_permutations=2**12) == pytest.approx(exact)  # enumerated
    mc = bias.sign_flip_test(d, n_permutations=4000, seed=0)  # 4000 < 4096: Monte Carlo
    assert abs(mc - exact) < 4 * np.sqrt(exact * (1 - exact) / 4000) + 1e-3


def test_sign_flip_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(0)
    assert bias.sign_flip_test(rng.normal(0.5, 1, 200), n_permutations=2000) < 0.001
    assert bias.sign_flip_test(rng.normal(0.0, 1, 200), n_permutations=2000) > 0.05
    assert bias.sign_flip_test(np.zeros(50)) == 1.0  # no gap at all
    d = rng.normal(0.3, 1, 100)
    assert bias.sign_flip_test(d, alternative="greater") < bias.sign_flip_test(d, alternative="less")
    with pytest.raises(ValueError, match="alternative"):
        bias.sign_flip_test(d, alternative="bigger")


def test_paired_test_beats_unpaired_when_pairs_share_noise():
    rng = np.random.default_rng(1)
    context = rng.normal(0, 1, 300)  # each pair shares a big context effect
    a, b = context + 0.05, context + rng.normal(0, 0.05, 300)
    assert bias.paired_gap(a, b, n_permutations=2000, n_boot=2000).p_value < 0.01


def test_mean_difference_ci_covers_and_clusters_widen():
    rng = np.random.default_rng(0)
    d = rng.normal(0.2, 1, 400)
    lo, hi = bias.mean_difference_ci(d, n_boot=3000)
    assert lo < d.mean() < hi and lo > 0
    # one of 8 templates carries all the gap: a template-level bootstrap is much wider
    t = np.repeat(np.arange(8), 50)
    d2 = rng.normal(0, 0.05, 400) + np.where(t == 0, 0.4, 0.0)
    iid = bias.mean_difference_ci(d2, n_boot=3000)
    clus = bias.mean_difference_ci(d2, n_boot=3000, clusters=t)
    assert iid[0] > 0 and (clus[1] - clus[0]) > 3 * (iid[1] - iid[0])
    with pytest.raises(ValueError, match="confidence"):
        bias.mean_difference_ci(d, confidence=95)
    with pytest.raises(ValueError, match="clusters"):
        bias.mean_difference_ci(d, clusters=t[:10])


def test_holm_known_values():
    np.testing.assert_allclose(bias.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(bias.holm([0.5]), [0.5])
    assert bias.holm([0.9, 0.8]).max() <= 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bias.holm([1.5])


def test_per_template_gaps_flags_the_planted_template():
    rng = np.random.default_rng(2)
    t = np.repeat(np.arange(5), 60)
    a = rng.normal(0, 0.1, 300) + np.where(t == 3, 0.15, 0.0)
    b = rng.normal(0, 0.1, 300)
    df = bias.per_template_gaps(a, b, t, n_permutations=2000, n_boot=1000)
    assert df["significant"].tolist() == [False, False, False, True, False]
    assert (df["p_holm"] >= df["p_value"]).all()


def test_gap_result():
    r = bias.paired_gap([1.0, 1.1, 0.9, 1.2], [0.0, 0.1, 0.0, 0.1], n_permutations=100, n_boot=500)
    assert r.excludes_zero and r.n == 4 and "gap +" in str(r)
    assert r.p_value == pytest.approx(2 / 16)  # exact: only ++++ and ---- are as extreme


def test_flip_rate():
    assert bias.flip_rate([0, 1, 1, 0], [0, 1, 0, 1]) == 0.5
    with pytest.raises(ValueError, match="paired"):
        bias.flip_rate([0, 1], [0])


# ---------------------------------------------------------------- binomial
def test_binomial_ci_and_test():
    lo, hi = bias.binomial_ci(60, 100)
    assert lo == pytest.approx(0.50200, abs=1e-4) and hi == pytest.approx(0.69060, abs=1e-4)
    assert bias.binomial_ci(0, 10)[0] == 0.0 and bias.binomial_ci(10, 10)[1] == 1.0
    assert bias.binomial_test(50, 100) == pytest.approx(1.0)
    assert bias.binomial_test(70, 100) < 0.001
    with pytest.raises(ValueError, match="k must"):
        bias.binomial_ci(11, 10)


# ---------------------------------------------------------------- causal LM scoring
class ToyTokenizer:
    """Characters -> ids 3..; no bos/eos, so a prefix must be given."""

    def encode(self, text):
        return [3 + (ord(c) % 40) for c in text]


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=48,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def reference_log_likelihood(model, ids):
    total = 0.0
    for t in range(1, len(ids)):
        logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
        total += torch.log_softmax(logits.double(), -1)[ids[t]].item()
    return total


def test_sentence_log_likelihoods_match_token_by_token(tiny_lm):
    tok = ToyTokenizer()
    sents = ["ab", "hello there", "a much longer sentence here"]
    ll, n = bias.sentence_log_likelihoods(tiny_lm, tok, sents, prefix_token_id=1, batch_size=2)
    assert ll.shape == (3,) and ll.dtype == np.float64 and n.tolist() == [2, 11, 27]
    for s, got in zip(sents, ll):
        assert got == pytest.approx(reference_log_likelihood(tiny_lm, [1] + tok.encode(s)), abs=1e-4)
    ll1, _ = bias.sentence_log_likelihoods(tiny_lm, tok, sents, prefix_token_id=1, batch_size=1)
    np.testing.assert_allclose(ll, ll1, atol=1e-4)  # padding never changes a score


def test_sentence_log_likelihoods_bad_input(tiny_lm):
    with pytest.raises(ValueError, match="prefix_token_id"):
        bias.sentence_log_likelihoods(tiny_lm, ToyTokenizer(), ["ab"])
    with pytest.raises(TypeError, match="list of str"):
        bias.sentence_log_likelihoods(tiny_lm, ToyTokenizer(), "ab", prefix_token_id=1)
    with pytest.raises(ValueError, match="no tokens"):
        bias.sentence_log_likelihoods(tiny_lm, ToyTokenizer(), [""], prefix_token_id=1)


def test_crows_summary():
    more = np.array([-1.0, -1.0, -5.0, -1.0])
    less = np.array([-2.0, -2.0, -1.0, -3.0])
    df = bias.crows_pairs_summary(more, less, groups=["g", "g", "r", "r"])
    assert df.loc["all", "stereo_rate"] == 0.75 and df.loc["all", "n"] == 4
    assert df.loc["g", "stereo_rate"] == 1.0 and df.loc["r", "stereo_rate"] == 0.5
    assert (df["ci_low"] <= df["stereo_rate"]).all() and (df["stereo_rate"] <= df["ci_high"]).all()
    with pytest.raises(ValueError, match="groups"):
        bias.crows_pairs_summary(more, less, groups=["g"])


def test_stereoset_and_bbq():
    s = bias.stereoset_scores([-1, -2, -1, -2], [-2, -1, -2, -1], [-3, -3, -3, -3])
    assert s == {"lms": 100.0, "ss": 50.0, "icat": 100.0, "n": 4}
    r = bias.stereoset_scores([-1, -4], [-2, -5], [-3, -1])  # second item: unrelated wins
    assert r["lms"] == 50.0 and r["ss"] == 100.0 and r["icat"] == 0.0
    with pytest.raises(ValueError, match="same length"):
        bias.stereoset_scores([1], [1, 2], [1])
    assert bias.bbq_bias_score(20, 40) == 0.0
    assert bias.bbq_bias_score(40, 40, accuracy=0.25) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="n_biased"):
        bias.bbq_bias_score(41, 40)


# ---------------------------------------------------------------- CDA
def test_counterfactual_augment():
    idx, out = bias.counterfactual_augment(
        ["HE said his Actress friend was fine.", "Shelley wrote it.", "Ann met Bob."],
        name_pairs=[("Ann", "Bob")],
    )
    assert idx == [0, 2]
    assert out == ["SHE said her Actor friend was fine.", "Bob met Ann."]
    with pytest.raises(ValueError, match="nothing to swap"):
        bias.counterfactual_augment(["x"], word_pairs=())


# ---------------------------------------------------------------- model card
def card_kwargs(**over):
    kw = dict(
        model_name="m",
        summary="A model.",
        license="apache-2.0",
        intended_use="Teaching.",
        training_data="RT.",
        metrics={"accuracy": (0.83, 0.81, 0.85)},
        bias_results={"gap": (0.01, -0.002, 0.02)},
        limitations=["Small."],
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        datasets=["rotten_tomatoes"],
    )
    kw.update(over)
    return kw


def test_model_card_sections_and_metadata(tmp_path):
    from huggingface_hub import ModelCard

    card = model_card(**card_kwargs())
    for section in (
        "Intended use",
        "Out-of-scope use",
        "Training data",
        "Evaluation",
        "Bias evaluation",
        "Limitations",
        "Licence",
    ):
        assert f"## {section}" in card.content
    assert "0.830 (95% CI 0.810 to 0.850)" in card.content
    card.save(tmp_path / "README.md")
    back = ModelCard.load(tmp_path / "README.md")
    assert back.data.license == "apache-2.0" and back.data.datasets == ["rotten_tomatoes"]


@pytest.mark.parametrize(
    "over, err, match",
    [
        (dict(license=""), ValueError, "license"),
        (dict(limitations=[]), ValueError, "limitations"),
        (dict(metrics={"accuracy": (0.9, 0.81, 0.85)}), ValueError, "outside its CI"),
        (dict(metrics={}), ValueError, "metrics"),
        (dict(metrics=[0.8]), TypeError, "dict"),
    ],
)
def test_model_card_refuses_misleading_cards(over, err, match):
    with pytest.raises(err, match=match):
        model_card(**card_kwargs(**over))


def test_format_estimate():
    assert format_estimate(0.5, 0.4, 0.6, digits=2) == "0.50 (95% CI 0.40 to 0.60)"
    with pytest.raises(TypeError):
        format_estimate("a", 0, 1)
