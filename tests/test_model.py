"""course_lib.model: presets, seeded construction, parameter counts and FLOPs per token."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from course_lib.model import (
    PRESETS,
    build_model,
    count_parameters,
    flops_per_token,
    make_config,
    non_embedding_parameters,
)


def test_presets_are_llama_configs_of_the_promised_sizes():
    assert {"tiny", "small", "gpt2-124m"} <= set(PRESETS)
    tiny, small = make_config("tiny"), make_config("small")
    assert isinstance(tiny, LlamaConfig) and tiny.vocab_size == 256
    assert 30_000 <= count_parameters(build_model(tiny)) <= 80_000
    assert 0.9e6 <= count_parameters(build_model(small)) <= 3e6
    # GPT-2 small's shape: ~85M non-embedding parameters, ~124M with its 50257-token vocabulary
    big = make_config("gpt2-124m", vocab_size=50257)
    assert 80e6 < non_embedding_parameters(big) < 90e6
    assert 115e6 < non_embedding_parameters(big) + 50257 * 768 < 130e6


def test_overrides_and_presets_are_not_mutated():
    cfg = make_config("tiny", num_hidden_layers=1, max_position_embeddings=32)
    assert cfg.num_hidden_layers == 1 and cfg.max_position_embeddings == 32
    assert make_config("tiny").num_hidden_layers == PRESETS["tiny"]["num_hidden_layers"]


@pytest.mark.parametrize(
    "bad, exc",
    [
        (dict(preset="huge"), ValueError),
        (dict(preset=3), TypeError),
        (dict(vocab_size=0), ValueError),
        (dict(hidden_size=31), ValueError),
        (dict(hidden_size=30), ValueError),
        (dict(num_key_value_heads=3, num_attention_heads=2), ValueError),
    ],
)
def test_make_config_rejects_bad_input(bad, exc):
    kwargs = {"preset": "tiny", **bad}
    with pytest.raises(exc, match="preset|vocab_size|hidden_size|num_attention_heads"):
        make_config(**kwargs)


def test_build_model_is_a_seeded_transformers_model_and_leaves_global_rng_alone():
    cfg = make_config("tiny")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(cfg, seed=1)
    after = torch.rand(1)
    assert torch.equal(before, after), "build_model must not consume the global RNG"
    b, c = build_model(cfg, seed=1), build_model(cfg, seed=2)
    assert isinstance(a, LlamaForCausalLM)
    assert torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    logits = a(input_ids=torch.randint(0, 256, (2, 10))).logits
    assert logits.shape == (2, 10, 256)
    with pytest.raises(TypeError, match="config"):
        build_model({"hidden_size": 8})
    with pytest.raises(ValueError, match="attn_implementation"):
        build_model(cfg, attn_implementation="flash")


def test_eager_and_sdpa_models_agree():
    cfg = make_config("tiny")
    x = torch.randint(0, 256, (2, 16))
    sdpa, eager = (
        build_model(cfg, seed=0).eval(),
        build_model(cfg, seed=0, attn_implementation="eager").eval(),
    )
    torch.testing.assert_close(sdpa(input_ids=x).logits, eager(input_ids=x).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"attention_bias": True, "mlp_bias": True},
        {"num_key_value_heads": 1},
        {"tie_word_embeddings": False},
    ],
)
def test_count_parameters_matches_formula(overrides):
    cfg = make_config("tiny", **overrides)
    model = build_model(cfg)
    n = non_embedding_parameters(cfg)
    assert count_parameters(model, exclude_embeddings=True) == n
    embeddings = 256 * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
    assert count_parameters(model) == n + embeddings
    assert count_parameters(model) == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_count_parameters_on_plain_modules_and_bad_input():
    assert count_parameters(torch.nn.Linear(3, 2)) == 8
    with pytest.raises(TypeError, match="model"):
        count_parameters("not a model")


def test_flops_per_token_palm_formula():
    cfg = make_config("small")
    n = non_embedding_parameters(cfg)
    layers, heads = cfg.num_hidden_layers, cfg.num_attention_heads
    q = cfg.hidden_size // heads
    assert flops_per_token(cfg, 128) == 6 * n + 12 * layers * heads * q * 128
    assert flops_per_token(cfg, 128, training=False) == pytest.approx(flops_per_token(cfg, 128) / 3)
    assert flops_per_token(cfg, 256) > flops_per_token(cfg, 128)  # attention grows with context
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(cfg, 0)
    with pytest.raises(TypeError, match="config"):
        flops_per_token(object(), 8)
