"""course_lib.adapt: chat masking, collate, LoRA (zero init, merge, save/load), scoring, errors.

Fast: a tiny random LlamaForCausalLM and a byte-level tokenizer with SmolLM2's ChatML template
built here; one slow test uses the real SmolLM2 tokenizer from the course cache.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib import adapt

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    """A byte-level tokenizer (256 byte tokens, no merges) plus <|im_start|>=256, <|im_end|>=257."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    t = PreTrainedTokenizerFast(tokenizer_object=tk)
    t.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    t.eos_token = t.pad_token = "<|im_end|>"  # as in SmolLM2: pad == end of turn
    t.chat_template = CHATML
    assert t.convert_tokens_to_ids("<|im_end|>") == 257
    return t


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=258,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


def randomize_lora_b(peft_model, seed: int = 1):
    """Give every B a non-zero value, as training would (B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# ---------------------------------------------------------------- masking


def test_labels_score_exactly_the_response_and_end_of_turn(tok):
    ex = adapt.encode_chat_example(tok, "Is it good?", "positive", system="Be brief.")
    ids, labels = ex["input_ids"], ex["labels"]
    assert len(ids) == len(labels)
    scored = [i for i, v in enumerate(labels) if v != adapt.IGNORE_INDEX]
    text = tok.decode([ids[i] for i in scored])
    assert text == "positive<|im_end|>", text  # the answer and the token that closes the turn
    assert all(labels[i] == ids[i] for i in scored)  # aligned with input_ids, not shifted
    # the prompt (with the assistant header) is exactly the unscored prefix
    head = tok.decode(ids[: ex["prompt_len"]])
    assert head.endswith("<|im_start|>assistant\n") and scored[0] == ex["prompt_len"]
    # ChatML's trailing newline after <|im_end|> is not scored
    assert tok.decode(ids[scored[-1] + 1 :]) == "\n"


def test_mask_uses_the_template_default_system_prompt(tok):
    ex = adapt.encode_chat_example(tok, "Hi", "Hello", system=None)
    assert "named SmolLM" in tok.decode(ex["input_ids"][: ex["prompt_len"]])
    assert tok.decode([i for i, v in zip(ex["input_ids"], ex["labels"]) if v != -100]) == "Hello<|im_end|>"


def test_collate_right_padding_never_scores_padding_even_when_pad_is_end_of_turn(tok):
    a = adapt.encode_chat_example(tok, "A long question here?", "yes", system="S")
    b = adapt.encode_chat_example(tok, "Q?", "no", system="S")
    batch = adapt.collate_sft([a, b], pad_id=tok.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    n_b = len(b["input_ids"])
    assert batch["attention_mask"][1, n_b:].sum() == 0 and (batch["labels"][1, n_b:] == -100).all()
    # the scored end-of-turn token has the same id as padding, and is still scored
    assert int((batch["labels"][1] == tok.pad_token_id).sum()) == 1
    left = adapt.collate_sft([a, b], pad_id=tok.pad_token_id, padding_side="left")
    assert left["input_ids"][1, -n_b:].tolist() == b["input_ids"]
    assert left["attention_mask"][1, : len(a["input_ids"]) - n_b].sum() == 0


def test_sft_loss_matches_the_model_loss(tok):
    model = tiny_llama()
    exs = [
        adapt.encode_chat_example(tok, f"Question {i}?", "answer " * (i + 1), system="S") for i in range(3)
    ]
    batch = adapt.collate_sft(exs, tok.pad_token_id)
    with torch.no_grad():
        ref = model(**batch).loss
        ours = adapt.sft_loss(model, batch)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_sentiment_examples_fit_max_length(tok):
    texts = ["word " * 200, "short"]
    exs = adapt.sentiment_sft_examples(tok, texts, [1, 0], max_length=160, system="S")
    assert all(len(e["input_ids"]) <= 160 for e in exs)
    assert [tok.decode([i for i, v in zip(e["input_ids"], e["labels"]) if v != -100]) for e in exs] == [
        "positive<|im_end|>",
        "negative<|im_end|>",
    ]


@pytest.mark.slow
def test_mask_on_smollm2_chat_template():
    from course_lib.data import load_smollm2

    tok, _ = load_smollm2()  # builds the shared course cache on first use (atomic, ~20 s)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template  # the GGUF ships ChatML
    ex = adapt.encode_chat_example(tok, adapt.sentiment_prompt("Great fun."), "positive")
    scored = [t for t, v in zip(ex["input_ids"], ex["labels"]) if v != -100]
    assert tok.convert_ids_to_tokens(scored) == ["positive", "<|im_end|>"]
    assert all(len(tok.encode(w, add_special_tokens=False)) == 1 for w in adapt.SENTIMENT_LABELS)


# ---------------------------------------------------------------- LoRA


def test_lora_b_is_zero_so_the_adapted_model_equals_the_base(tok):
    model = tiny_llama()
    x = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        base = model(x).logits.clone()
    pm = adapt.add_lora(model, r=4, lora_alpha=8, lora_dropout=0.0)
    bs = [p for n, p in pm.named_parameters() if "lora_B" in n]
    assert bs and all(float(b.detach().abs().max()) == 0 for b in bs)
    with torch.no_grad():
        torch.testing.assert_close(pm(x).logits, base)
    counts = adapt.trainable_parameters(pm)
    # r * (in + out) per adapted layer: q_proj 32->32, v_proj 32->16 (2 kv heads of 8), 2 layers
    assert counts["trainable"] == 2 * (4 * (32 + 32) + 4 * (32 + 16))
    assert 0 < counts["fraction"] < 0.1
    assert all(not p.requires_grad for n, p in pm.named_parameters() if "lora_" not in n)


def test_lora_scale_is_alpha_over_r(tok):
    model = tiny_llama()
    pm = adapt.add_lora(model, r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj"])
    randomize_lora_b(pm)
    layer = pm.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 32)
    with torch.no_grad():
        expected = (
            layer.base_layer(x)
            + (8 / 4) * x @ layer.lora_A["default"].weight.T @ layer.lora_B["default"].weight.T
        )
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_merged_equals_unmerged(tok):
    pm = adapt.add_lora(tiny_llama(), r=4, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    randomize_lora_b(pm)
    x = torch.randint(0, 256, (2, 11))
    with torch.no_grad():
        before = pm(x).logits.clone()
    merged, diff = adapt.merge_lora(pm, x)
    assert diff < 1e-4
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(x).logits, before, rtol=1e-4, atol=1e-4)


def test_adapter_round_trip(tmp_path):
    pm = adapt.add_lora(tiny_llama(), r=2, lora_dropout=0.0)
    randomize_lora_b(pm)
    x = torch.randint(0, 256, (1, 7))
    with torch.no_grad():
        ref = pm(x).logits.clone()
    path = adapt.save_adapter(pm, tmp_path / "adapter")
    assert path.name == "adapter_model.safetensors" and path.stat().st_size < 50_000
    loaded = adapt.load_adapter(tiny_llama(), tmp_path / "adapter")  # a fresh copy of the same base
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, ref)
        # and the adapter matters: the bare base differs
        assert (tiny_llama()(x).logits - ref).abs().max() > 1e-3


def test_training_lowers_the_loss_and_only_moves_adapters(tok):
    model = tiny_llama()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    pm = adapt.add_lora(model, r=4, lora_alpha=16, lora_dropout=0.0)
    exs = adapt.sentiment_sft_examples(
        tok, ["good", "bad", "fine film", "awful"], [1, 0, 1, 0], 200, system="S"
    )
    out = adapt.train_sft(pm, exs, steps=30, lr=1e-2, batch_size=4, pad_id=tok.pad_token_id, progress=False)
    assert len(out["losses"]) == 30 and out["losses"][-1] < out["losses"][0]
    assert out["tokens"] == 30 * sum(len(e["input_ids"]) for e in exs) and out["tokens_per_s"] > 0
    for n, p in pm.base_model.model.named_parameters():
        if "lora_" not in n:
            key = n.replace(".base_layer", "")
            torch.testing.assert_close(p, frozen[key], msg=f"{n} changed: the base must stay frozen")


def test_gradient_checkpointing_gives_the_same_training(tok):
    exs = adapt.sentiment_sft_examples(tok, ["good", "bad"], [1, 0], 200, system="S")
    runs = []
    for gc in (False, True):
        pm = adapt.add_lora(tiny_llama(), r=2, lora_dropout=0.0)
        runs.append(
            adapt.train_sft(
                pm, exs, 3, lr=1e-2, batch_size=2, pad_id=257, gradient_checkpointing=gc, progress=False
            )
        )
    np.testing.assert_allclose(runs[0]["losses"], runs[1]["losses"], rtol=1e-4)


def test_micro_batches_accumulate_the_full_batch_gradient(tok):
    """Gradient accumulation (micro_batch_size) divides by the whole batch's scored tokens: the
    same losses and adapter weights as one pass, although the examples' answers differ in length."""
    exs = adapt.sentiment_sft_examples(
        tok, ["good", "bad film", "fine", "awful, awful"], [1, 0, 1, 0], 200, system="S"
    )
    exs[1] = dict(exs[1], labels=[adapt.IGNORE_INDEX] * len(exs[1]["labels"]))  # a row with nothing scored
    runs, weights = [], []
    for micro in (None, 1, 3):
        torch.manual_seed(0)
        pm = adapt.add_lora(tiny_llama(), r=2, lora_dropout=0.0, seed=0)
        runs.append(
            adapt.train_sft(
                pm, exs, 3, lr=1e-2, batch_size=4, pad_id=257, micro_batch_size=micro, progress=False
            )
        )
        weights.append(torch.cat([p.detach().flatten() for n, p in pm.named_parameters() if "lora_" in n]))
    for r, w in zip(runs[1:], weights[1:]):
        np.testing.assert_allclose(r["losses"], runs[0]["losses"], rtol=1e-4)
        torch.testing.assert_close(w, weights[0], rtol=1e-4, atol=1e-6)
        assert r["tokens"] == runs[0]["tokens"]
    with pytest.raises(ValueError, match="micro_batch_size must be an int >= 1"):
        adapt.train_sft(pm, exs, 1, micro_batch_size=0, progress=False)


# ---------------------------------------------------------------- scoring


def test_single_and_multi_token_scoring_agree(tok):
    model = tiny_llama()
    prompts = [adapt.chat_prompt_ids(tok, p, system="S") for p in ("a?", "a much longer question?")]
    fast = adapt.label_log_likelihoods(model, tok, prompts, ["x", "y"])  # one token each: left padding
    # the general path (right padding, per pair): force it with a two-token candidate, then compare
    slow = adapt.label_log_likelihoods(model, tok, prompts, ["x", "y", "zz"])
    np.testing.assert_allclose(fast, slow[:, :2], rtol=1e-4, atol=1e-4)
    # and against a direct computation for prompt 1 and "zz"
    ids = torch.tensor([prompts[1] + tok.encode("zz")])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0], -1)
    n = len(prompts[1])
    direct = float(logp[n - 1, ids[0, n]] + logp[n, ids[0, n + 1]])
    assert slow[1, 2] == pytest.approx(direct, abs=1e-4)
    assert adapt.predict_labels(model, tok, prompts, ["x", "y"]).tolist() == fast.argmax(1).tolist()


def test_few_shot_prompt_puts_shots_before_the_question(tok):
    ids = adapt.chat_prompt_ids(tok, "Q3", system="S", shots=[("Q1", "A1"), ("Q2", "A2")])
    text = tok.decode(ids)
    assert text.index("Q1") < text.index("A1") < text.index("Q2") < text.index("Q3")
    assert text.endswith("<|im_start|>assistant\n")


def test_split_by_movie_has_no_shared_movie_or_near_duplicate():
    from datasets import Dataset

    texts = [
        f"film number {i} was {'wonderful and moving' if i % 2 else 'dull and far too long'}"
        for i in range(60)
    ]
    texts[59] = texts[0] + "!"  # a near-duplicate in another movie
    ds = Dataset.from_dict(
        {"text": texts, "label": [i % 2 for i in range(60)], "movie": [f"m{i // 3}" for i in range(60)]}
    )
    out = adapt.split_by_movie(ds, n_train=30, n_test=15, seed=1)
    r = out["report"]
    assert r["shared_movies"] == 0 and r["near_duplicates_left"] == 0
    assert not set(out["train"]["movie"]) & set(out["test"]["movie"])


def test_peak_memory_sees_an_allocation():
    with adapt.PeakMemory() as mem:
        x = torch.ones(2**24)  # 64 MiB
        x += 1
    assert mem.delta > 32 * 2**20, mem
    del x


# ---------------------------------------------------------------- errors


def test_clear_errors(tok):
    model = tiny_llama()
    with pytest.raises(ValueError, match="target_modules must name linear layers.*q_proj"):
        adapt.add_lora(model, target_modules=["query"])
    with pytest.raises(ValueError, match="r must be an int >= 1, got 0"):
        adapt.add_lora(model, r=0)
    with pytest.raises(ValueError, match="lora_alpha must be a number > 0"):
        adapt.add_lora(model, lora_alpha=0)
    with pytest.raises(TypeError, match="prompt must be a str"):
        adapt.encode_chat_example(tok, 3, "x")
    with pytest.raises(ValueError, match="more than max_length=5"):
        adapt.encode_chat_example(tok, "a long prompt", "x", max_length=5)
    with pytest.raises(ValueError, match="labels must hold 0"):
        adapt.sentiment_sft_examples(tok, ["a"], [2], 200)
    with pytest.raises(ValueError, match="examples must hold at least one"):
        adapt.collate_sft([], 0)
    with pytest.raises(ValueError, match="padding_side must be one of"):
        adapt.collate_sft([{"input_ids": [1]}], 0, padding_side="middle")
    with pytest.raises(ValueError, match="no trainable parameters"):
        adapt.train_sft(
            model.requires_grad_(False), [{"input_ids": [1, 2], "labels": [1, 2]}], 1, progress=False
        )
    with pytest.raises(ValueError, match="no scored token"):
        adapt.sft_loss(model, adapt.collate_sft([{"input_ids": [1, 2], "labels": [-100, -100]}], 0))
    with pytest.raises(ValueError, match="candidates must hold at least two"):
        adapt.label_log_likelihoods(model, tok, [[1, 2]], ["only"])
    with pytest.raises(TypeError, match="peft_model must be a peft.PeftModel"):
        adapt.merge_lora(model, torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(FileNotFoundError, match="save_adapter"):
        adapt.load_adapter(model, "/nonexistent/folder")


def test_missing_chat_template_is_explained(tok):
    import copy

    bare = copy.deepcopy(tok)
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat_template"):
        adapt.encode_chat_example(bare, "Hi", "Hello")


def test_qlora_trains_adapters_on_int4_weights(tok):
    from course_lib.quantization import QuantizedLinear, model_nbytes, quantize_model

    model = tiny_llama()
    fp32 = model_nbytes(model)
    pm = adapt.add_lora(model, r=2, lora_dropout=0.0)
    quantize_model(pm, bits=4, group_size=32, skip=("lora_",), inplace=True)
    q = pm.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q.base_layer, QuantizedLinear) and isinstance(q.lora_A["default"], torch.nn.Linear)
    assert model_nbytes(pm) < fp32
    exs = adapt.sentiment_sft_examples(tok, ["good", "bad"], [1, 0], 200, system="S")
    out = adapt.train_sft(
        pm, exs, 10, lr=1e-2, batch_size=2, pad_id=257, gradient_checkpointing=True, progress=False
    )
    assert out["losses"][-1] < out["losses"][0]
