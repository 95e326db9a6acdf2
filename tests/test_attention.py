"""Unit tests of course_lib.attention: the from-scratch attention against PyTorch and transformers."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import (
    CausalSelfAttention,
    KVCache,
    apply_rope,
    causal_mask,
    rope_cos_sin,
    scaled_dot_product_attention,
)


def _tiny_llama(n_kv_heads=4, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    return config, LlamaForCausalLM(config).eval()


def test_causal_mask_lower_triangle_and_offset():
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    # 2 new queries after 3 cached keys: query 0 is position 3, query 1 is position 4
    assert causal_mask(2, 5).int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


@pytest.mark.parametrize(
    "bad,error", [(0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_causal_mask_rejects_bad_lengths(bad, error):
    # course_lib._validation: a wrong type is a TypeError, a wrong value a ValueError
    with pytest.raises(error, match="q_len must be an int >= 1"):
        causal_mask(bad)


def test_causal_mask_rejects_fewer_keys_than_queries():
    with pytest.raises(ValueError, match="kv_len must be >= q_len"):
        causal_mask(4, 2)


@pytest.mark.parametrize("shape", [(1, 1, 1, 4), (2, 3, 7, 8), (1, 4, 16, 16)])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_pytorch(shape, causal):
    torch.manual_seed(0)
    q, k, v = (torch.randn(shape) for _ in range(3))
    ours = scaled_dot_product_attention(q, k, v, causal=causal)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_sdpa_with_boolean_mask_and_weights():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 2, 5, 4), torch.randn(2, 2, 6, 4), torch.randn(2, 2, 6, 3)
    mask = torch.rand(5, 6) > 0.3
    mask[:, 0] = True  # every row keeps at least one key
    out, w = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 5))
    assert (w[..., ~mask] == 0).all()
    # the scale is 1/sqrt(D): weights equal softmax of the scaled scores
    ref_w = torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(4)).masked_fill(~mask, -math.inf), -1)
    torch.testing.assert_close(w, ref_w)


def test_future_tokens_do_not_change_past_outputs():
    torch.manual_seed(2)
    attn = CausalSelfAttention(d_model=16, n_heads=4)
    x = torch.randn(1, 8, 16)
    y = x.clone()
    y[:, 5:] += torch.randn(1, 3, 16)  # change only the future
    torch.testing.assert_close(attn(x)[:, :5], attn(y)[:, :5])
    assert not torch.allclose(attn(x)[:, 5:], attn(y)[:, 5:])


def test_sdpa_input_validation():
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        scaled_dot_product_attention([[1.0]], q, q)
    with pytest.raises(ValueError, match="same last dimension"):
        scaled_dot_product_attention(q, torch.randn(1, 2, 3, 5), q)
    with pytest.raises(ValueError, match="same number of positions"):
        scaled_dot_product_attention(q, q, torch.randn(1, 2, 4, 4))
    with pytest.raises(TypeError, match="bool tensor"):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(3, 3))


def test_rope_preserves_norm_and_depends_on_relative_position():
    torch.manual_seed(3)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m, n):
        cq, sq = rope_cos_sin(torch.tensor([m]), 8)
        ck, sk = rope_cos_sin(torch.tensor([n]), 8)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum().item()

    assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)
    assert score(7, 3) != pytest.approx(score(7, 5), abs=1e-3)
    cos, sin = rope_cos_sin(20, 8)
    x = torch.randn(2, 3, 20, 8)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_rope_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="head_dim must be even"):
        rope_cos_sin(4, 7)


def test_rope_matches_transformers():
    config, model = _tiny_llama()
    x = torch.zeros(1, 10, config.hidden_size)
    cos_ref, sin_ref = model.model.rotary_emb(x, torch.arange(10)[None])
    cos, sin = rope_cos_sin(10, config.head_dim, base=config.rope_parameters["rope_theta"])
    torch.testing.assert_close(cos, cos_ref[0])
    torch.testing.assert_close(sin, sin_ref[0])


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("use_sdpa", [False, True])
def test_attention_matches_llama_layer(n_kv_heads, use_sdpa):
    config, model = _tiny_llama(n_kv_heads)
    layer = model.model.layers[1].self_attn
    torch.manual_seed(4)
    x = torch.randn(2, 9, config.hidden_size)
    pos = torch.arange(9)[None].expand(2, -1)
    cos, sin = model.model.rotary_emb(x, pos)
    additive = torch.full((9, 9), -math.inf).triu(1)[None, None]
    with torch.no_grad():
        ref, ref_w = layer(x, position_embeddings=(cos, sin), attention_mask=additive)
        ours = CausalSelfAttention.from_llama(layer, config, use_sdpa=use_sdpa)
        out = ours(x)
        _, w = ours(x, return_weights=True)
    assert ours.layer_idx == 1
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w, ref_w, atol=1e-5, rtol=1e-4)


def test_from_llama_rejects_other_modules():
    config, _ = _tiny_llama()
    with pytest.raises(TypeError, match="LlamaAttention"):
        CausalSelfAttention.from_llama(torch.nn.Linear(2, 2), config)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_kv_cache_gives_the_same_outputs(n_kv_heads):
    torch.manual_seed(5)
    attn = CausalSelfAttention(d_model=16, n_heads=4, n_kv_heads=n_kv_heads)
    x = torch.randn(2, 7, 16)
    full = attn(x)
    cache = KVCache()
    steps = [attn(x[:, :3], cache=cache)] + [attn(x[:, t : t + 1], cache=cache) for t in range(3, 7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-6, rtol=1e-5)
    assert cache.length == 7
    # keys and values: B * n_kv_heads * T * head_dim float32 numbers each
    assert cache.nbytes == 2 * 2 * n_kv_heads * 7 * 4 * 4


def test_kv_cache_starts_empty_and_validates():
    cache = KVCache()
    assert cache.length == 0 and cache.nbytes == 0
    with pytest.raises(ValueError, match="4 dimensions"):
        cache.update(0, torch.zeros(2, 3), torch.zeros(2, 3))


def test_attention_module_validation():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        CausalSelfAttention(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="divisible by n_kv_heads"):
        CausalSelfAttention(d_model=12, n_heads=4, n_kv_heads=3)
    attn = CausalSelfAttention(d_model=8, n_heads=2)
    with pytest.raises(ValueError, match="d_model=8"):
        attn(torch.randn(1, 3, 6))
