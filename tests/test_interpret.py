"""Unit tests for course_lib.interpret: Shapley axioms, faithfulness curves, wrappers, errors."""

import math

import numpy as np
import pytest
import torch

from course_lib import interpret as I


def table_game(n, seed):
    tab = np.random.default_rng(seed).normal(size=2**n)
    return tab, lambda masks: tab[(np.asarray(masks, dtype=int) << np.arange(n)).sum(1)]


def test_exact_shapley_additive_and_and_game():
    w = np.array([1.5, -2.0, 0.0, 0.25])
    phi, base = I.exact_shapley(lambda m: m.astype(float) @ w + 3.0, 4)
    assert np.allclose(phi, w) and base == pytest.approx(3.0)
    phi, _ = I.exact_shapley(lambda m: m.all(1).astype(float), 3)
    assert np.allclose(phi, 1 / 3)


def test_exact_shapley_negation_dummy_symmetry():
    def negation(m):
        return np.where(m[:, 0] & m[:, 1], -1.0, np.where(m[:, 0], 1.0, 0.0))

    assert np.allclose(I.exact_shapley(negation, 2)[0], [0.0, -1.0])
    phi, _ = I.exact_shapley(lambda m: 2.0 * (m[:, 0] & m[:, 2]), 3)
    assert phi[1] == 0 and phi[0] == pytest.approx(phi[2]) == pytest.approx(1.0)


@pytest.mark.parametrize("n,seed", [(1, 0), (3, 1), (6, 2)])
def test_exact_shapley_efficiency_and_brute_force(n, seed):
    tab, game = table_game(n, seed)
    phi, base = I.exact_shapley(game, n)
    assert abs(phi.sum() + base - tab[-1]) < 1e-10
    # against the permutation definition (average marginal contribution over all orders)
    from itertools import permutations

    ref = np.zeros(n)
    perms = list(permutations(range(n)))
    for p in perms:
        mask = np.zeros(n, bool)
        for i in p:
            before = game(mask[None])[0]
            mask[i] = True
            ref[i] += game(mask[None])[0] - before
    assert np.allclose(phi, ref / len(perms))


def test_exact_shapley_rejects_too_many_players_and_bad_value_fn():
    with pytest.raises(ValueError, match="n_players=17"):
        I.exact_shapley(lambda m: np.zeros(len(m)), 17)
    with pytest.raises(ValueError, match="n_players"):
        I.all_coalitions(0)
    with pytest.raises(ValueError, match="returned"):
        I.exact_shapley(lambda m: np.zeros(3), 3)


def test_deletion_insertion_aopc_eraser():
    w = np.array([0.5, 3.0, -1.0, 2.0])
    game = lambda m: np.asarray(m, float) @ w
    assert np.allclose(I.deletion_curve(game, w), [4.5, 1.5, -0.5, -1.0, 0.0])
    assert np.allclose(I.insertion_curve(game, w), [0.0, 3.0, 5.0, 5.5, 4.5])
    assert I.aopc([4.5, 1.5, -0.5, -1.0, 0.0]) == pytest.approx(3.6)
    # top 25% (1 of 4) = player 1, top 50% = players 1 and 3
    assert I.comprehensiveness(game, w, (0.25, 0.5)) == pytest.approx(((3.0) + (5.0)) / 2)
    assert I.sufficiency(game, w, (0.25, 0.5)) == pytest.approx(((4.5 - 3.0) + (4.5 - 5.0)) / 2)
    with pytest.raises(ValueError, match="one value per player"):
        I.deletion_curve(game, w[:3], n_players=4)
    with pytest.raises(ValueError, match="at least 2"):
        I.aopc([1.0])


def test_log_odds():
    assert np.allclose(I.log_odds([0.5, 0.8]), [0.0, math.log(4)])
    assert np.isfinite(I.log_odds([0.0, 1.0])).all()
    with pytest.raises(ValueError, match="logits"):
        I.log_odds([2.0])


@pytest.fixture(scope="module")
def tiny_bert():
    """A random 2-layer BERT classifier with MiniLM's real tokenizer (fast, offline)."""
    from transformers import BertConfig, BertForSequenceClassification

    from course_lib.data import load_minilm

    tok, _ = load_minilm()
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
    )
    return tok, BertForSequenceClassification(cfg).eval()


def test_classifier_log_odds_and_token_game_additivity(tiny_bert):
    tok, model = tiny_bert
    f = I.ClassifierLogOdds(model, tok, target=1)
    text = "A dull, lifeless mess."
    with torch.no_grad():
        logits = model(**tok([text], return_tensors="pt")).logits[0]
    assert f([text])[0] == pytest.approx(float(logits[1] - logits[0]), abs=1e-5)
    tokens, game = I.token_game(model, tok, text)
    assert tokens == tok.tokenize(text)
    phi, base = I.exact_shapley(game, len(tokens))
    full = game(np.ones((1, len(tokens)), bool))[0]
    assert abs(phi.sum() + base - full) < 1e-6
    assert full == pytest.approx(f([text])[0], abs=1e-5)
    with pytest.raises(ValueError, match="target"):
        I.ClassifierLogOdds(model, tok, target=2)
    with pytest.raises(ValueError, match="non-empty"):
        I.token_game(model, tok, "  ")


def test_integrated_gradients_completeness(tiny_bert):
    tok, model = tiny_bert
    text = "Wonderful and moving."
    tokens, game = I.token_game(model, tok, text)
    n = len(tokens)
    gap = game(np.ones((1, n), bool))[0] - game(np.zeros((1, n), bool))[0]
    _, ig = I.integrated_gradients(model, tok, text, steps=64)
    assert ig.shape == (n,)
    assert abs(ig.sum() - gap) < 0.05 * abs(gap) + 1e-3
    _, gx = I.gradient_x_input(model, tok, text)
    _, att = I.attention_to_cls(model, tok, text)
    assert gx.shape == att.shape == (n,) and (att >= 0).all()
