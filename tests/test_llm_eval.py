"""course_lib.llm_eval: benchmark loading and answer checks, lm-eval's request encoding, batched
log-likelihoods against a one-by-one reference, acc / acc_norm / acc_bytes, intervals, generative
exact match, contamination and the judge. A tiny random Llama with SmolLM2's real tokenizer (so
BPE merges at the context/continuation boundary are real); the lm-eval agreement itself is in
tests/test_lm_eval_tasks.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib import llm_eval as E


@pytest.fixture(scope="module")
def smol_tok():
    from course_lib import data

    if not data.smollm2_cache_ready():
        data.load_smollm2()  # builds the shared course cache once (atomic)
    return data.load_smollm2_tokenizer()


@pytest.fixture(scope="module")
def tiny(smol_tok):
    from course_lib.model import build_model, make_config

    return build_model(make_config("tiny", vocab_size=len(smol_tok)), seed=0).eval()


def _reference_ll(model, tok, context, continuation):
    """One request, no batching, no padding, full logits: the definition."""
    ctx, cont = E.encode_request(tok, context, continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    pos = range(len(ctx) - 1, len(ctx) + len(cont) - 1)  # logits at t predict token t + 1
    return sum(float(logp[p, t]) for p, t in zip(pos, cont)), all(
        int(logp[p].argmax()) == t for p, t in zip(pos, cont)
    )


def test_encode_request_splits_one_encoding_and_moves_trailing_spaces(smol_tok):
    ctx, cont = E.encode_request(smol_tok, "Question: is it raining?\nAnswer: ", "yes")
    # the space moved to the continuation, where BPE merges it with the word: one token " yes"
    assert smol_tok.decode(cont) == " yes" and len(cont) == 1
    assert ctx == smol_tok("Question: is it raining?\nAnswer:", add_special_tokens=False)["input_ids"]
    # separate encodings would give a lone space token and "yes": a different continuation
    separate = smol_tok("yes", add_special_tokens=False)["input_ids"]
    assert cont != separate
    whole = smol_tok("Question: is it raining?\nAnswer: yes", add_special_tokens=False)["input_ids"]
    assert ctx + cont == whole


def test_encode_request_refuses_a_continuation_that_vanishes_into_the_context():
    class Merging:  # a tokenizer where "ab" is one token: "a" + "b" leaves nothing to score
        def encode(self, text):
            return [0] if text == "ab" else [ord(c) for c in text]

    with pytest.raises(ValueError, match="continuation"):
        E.encode_request(Merging(), "a", "b")
    with pytest.raises(ValueError, match="non-empty"):
        E.encode_request(Merging(), "a", "")


def test_batched_loglikelihoods_match_the_one_by_one_definition(tiny, smol_tok):
    reqs = [
        ("The capital of France is", " Paris"),
        ("The capital of France is", " a city in the north of the country"),
        ("Q: 2 + 2 =\nA:", " 4"),
        ("Q: 2 + 2 =\nA:", " 5"),  # same input as the one above: one forward pass for both
        ("A much longer context " * 12 + "ends here and", " then continues for a while, with commas"),
        ("Answer: ", "yes"),
        ("The capital of France is", " Paris"),  # duplicate
    ]
    ll, greedy = E.loglikelihoods(tiny, smol_tok, reqs, batch_size=3)
    assert ll.shape == (7,) and greedy.dtype == bool
    for (c, x), got, g in zip(reqs, ll, greedy):
        want, want_g = _reference_ll(tiny, smol_tok, c, x)
        assert got == pytest.approx(want, abs=1e-4), (c[-20:], x)
        assert g == want_g
    assert ll[0] == ll[6]
    small, _ = E.loglikelihoods(
        tiny, smol_tok, reqs, batch_size=3, max_batch_tokens=10
    )  # one long request per batch
    np.testing.assert_allclose(small, ll, atol=1e-4)


def test_cache_skips_scored_requests_and_peft_models_score_like_their_base(tiny, smol_tok):
    from course_lib import adapt

    calls = []
    h = tiny.register_forward_hook(lambda *a: calls.append(1))
    try:
        cache = E.ScoreCache()
        reqs = [("Hello there", " friend"), ("Hello there", " enemy")]
        a, _ = E.loglikelihoods(tiny, smol_tok, reqs, cache=cache)
        n = len(calls)
        b, _ = E.loglikelihoods(tiny, smol_tok, reqs[::-1], cache=cache)
        assert len(calls) == n and np.array_equal(a, b[::-1]) and len(cache) == 2
    finally:
        h.remove()
    pm = adapt.add_lora(tiny, r=2, lora_dropout=0.0)  # B = 0: the adapted model equals the base
    c, _ = E.loglikelihoods(pm, smol_tok, reqs)
    np.testing.assert_allclose(c, a, atol=1e-5)


def test_choice_predictions_normalise_by_characters_and_by_bytes():
    # same ll per character, but "café" has 5 bytes for 4 characters
    r = E.choice_predictions([-8.0, -8.2], ["café", "cafe"])
    assert r["pred"] == 0 and r["pred_norm"] == 0
    r = E.choice_predictions([-8.0, -7.0], ["日本語です", "nihongo"])  # 5 chars/15 bytes vs 7
    assert (r["pred"], r["pred_norm"], r["pred_bytes"]) == (
        1,
        1,
        0,
    )  # -1.6 vs -1 per char; -0.53 vs -1 per byte
    with pytest.raises(ValueError, match="one log-likelihood per choice"):
        E.choice_predictions([-1.0], ["a", "b"])


def test_loaders_check_answers_and_count_what_they_drop():
    m = E.load_benchmark("mmlu")
    assert len(m) == 2848 and m.dropped["two options read the same"] == 2
    assert all(len(i.options) == 4 and 0 <= i.gold < 4 for i in m.items)
    # every gold answer of the kept items is what the file's "answer" line says
    first = m.items[0]
    assert first.options[first.gold] == "$0 $25000 $0"
    b = E.load_benchmark("boolq", n=50, seed=1)
    assert len(b) == 50 and {i.options for i in b.items} == {("no", "yes")}
    assert E.load_benchmark("boolq", n=50, seed=1).items == b.items  # seeded
    h = E.load_benchmark("hellaswag")
    assert len(h) == 0 and sum(h.dropped.values()) == 3000
    c = E.load_benchmark("commonsenseqa")
    assert c.n_in_file == 1221 and len(c) + sum(c.dropped.values()) == 1221
    with pytest.raises(ValueError, match="one of"):
        E.load_benchmark("mmlu-pro")
    with pytest.raises(ValueError, match="datasets.load_dataset"):
        E.load_benchmark("piqa", hub_id="ybisk/piqa")


def test_prompts_letters_cloze_and_k_shot_never_use_the_item_itself():
    b = E.load_benchmark("openbookqa", n=20)
    p0 = E.build_prompts(b, style="letters")[0]
    item = b.items[0]
    assert p0.choices == ("A", "B", "C", "D") and f"\nD. {item.options[3]}\nAnswer:" in p0.context
    cl = E.build_prompts(b)[0]
    assert cl.choices == item.options and cl.context == f"Question: {item.question}\nAnswer:"
    shot = E.build_prompts(b, k_shot=3, seed=0)
    for p, it in zip(shot, b.items):
        blocks = p.context.split("\n\n")
        assert len(blocks) == 4 and blocks[-1] == f"Question: {it.question}\nAnswer:"
        assert f"Question: {it.question}\n" not in "\n\n".join(blocks[:-1])
        solved = blocks[0].rsplit("\nAnswer: ", 1)[1].strip()
        assert any(solved == s.options[s.gold] for s in b.items)
    with pytest.raises(ValueError, match="style"):
        E.build_prompts(b, style="json")
    with pytest.raises(ValueError, match="k_shot"):
        E.build_prompts(b.items[:2], k_shot=2)


def test_score_multiple_choice_columns_and_gold(tiny, smol_tok):
    b = E.load_benchmark("piqa", n=6)
    prompts = E.build_prompts(b)
    df = E.score_multiple_choice(tiny, smol_tok, prompts, progress=False)
    assert list(df.gold) == [i.gold for i in b.items]
    for row, p in zip(df.itertuples(), prompts):
        assert len(row.lls) == 2 and row.acc == int(int(np.argmax(row.lls)) == p.gold)
        want, _ = _reference_ll(tiny, smol_tok, p.context, " " + p.choices[0])
        assert row.lls[0] == pytest.approx(want, abs=1e-4)
    assert E.chance_accuracy(df.n_choices) == 0.5
    with pytest.raises(TypeError, match="Prompt"):
        E.score_multiple_choice(tiny, smol_tok, [("ctx", "choice")])


def test_paired_interval_is_narrower_than_unpaired_for_correlated_models():
    rng = np.random.default_rng(0)
    a = (rng.random(400) < 0.6).astype(int)
    b = a.copy()
    flip = rng.choice(400, size=20, replace=False)
    b[flip] = 1  # B = A plus 20 extra items right (some were right already)
    r = E.paired_difference(a, b, n_boot=2000)
    assert r["diff"] == pytest.approx(b.mean() - a.mean())
    ca, cb = E.accuracy_with_ci(a), E.accuracy_with_ci(b)
    unpaired_half_width = np.hypot(ca["high"] - ca["low"], cb["high"] - cb["low"]) / 2
    assert (r["high"] - r["low"]) / 2 < 0.5 * unpaired_half_width
    assert r["low"] > 0  # the paired view detects the gain
    with pytest.raises(ValueError, match="same items"):
        E.paired_difference(a, b[:-1])
    with pytest.raises(ValueError, match="0/1"):
        E.accuracy_with_ci([0.5, 1.0])


def test_exact_match_and_generation(tiny, smol_tok):
    assert E.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert E.exact_match("an apple", ["Apple"]) == 1 and E.exact_match("apples", "apple") == 0
    with pytest.raises(ValueError, match="at least one"):
        E.exact_match("x", [])
    out = E.generate_answers(tiny, smol_tok, ["Hello", "A longer prompt here"], max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(o, str) and "\n" not in o for o in out)


def test_contamination_finds_planted_items():
    b = E.load_benchmark("openbookqa", n=30, seed=2)
    texts = [i.text for i in b.items]
    corpus = ["An unrelated document about baking bread and ovens."] * 3
    corpus.append("Trivia night! " + texts[4] + " Good luck.")
    r = E.contamination(texts, corpus, n=8)
    assert 4 in r["ngram_items"] and 4 in r["near_dup_items"]
    assert r["ngram_frac"] == pytest.approx(len(r["ngram_items"]) / 30) and r["ngram_frac"] < 0.2
    clean = E.contamination(texts, corpus[:3], n=8)
    assert clean["ngram_frac"] == 0 and clean["near_dup_items"] == []


def test_judge_probabilities_are_in_range_and_swap_consistently(tiny, smol_tok):
    q, a, b = ["What is 2 + 2?"] * 2, ["4", "Four."], ["5", "It is 22."]
    p12 = E.judge_first_preference(tiny, smol_tok, q, a, b)
    p21 = E.judge_first_preference(tiny, smol_tok, q, b, a)
    assert p12.shape == (2,) and ((p12 > 0) & (p12 < 1)).all() and ((p21 > 0) & (p21 < 1)).all()
    with pytest.raises(ValueError, match="same length"):
        E.judge_first_preference(tiny, smol_tok, q, a, b[:1])


def test_bad_requests_get_clear_errors(tiny, smol_tok):
    with pytest.raises(TypeError, match="wrap one pair"):
        E.loglikelihoods(tiny, smol_tok, ("context", " continuation"))
    with pytest.raises(TypeError, match="pair"):
        E.loglikelihoods(tiny, smol_tok, ["just a string"])
    with pytest.raises(ValueError, match="batch_size"):
        E.loglikelihoods(tiny, smol_tok, [("a", " b")], batch_size=0)
