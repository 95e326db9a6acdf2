"""Unit tests of course_lib.quantization (fast, offline; one GGUF test reads SmolLM2's file)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.quantization import (
    Q4_1_BLOCK_BYTES,
    QuantizedLinear,
    dequantize,
    dequantize_q4_1,
    fake_quantize,
    model_nbytes,
    pack_bits,
    pack_int4,
    qrange,
    quantize,
    quantize_model,
    read_gguf_tensor,
    sqnr,
    unpack_bits,
    unpack_int4,
    unpermute_llama_qk,
)


def heavy_tailed(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    x.view(-1)[::97] *= 20  # a few outliers, as in LLM weights
    return x


# ---------------------------------------------------------------------------------- ranges, args
def test_qrange():
    assert qrange(8) == (-127, 127)
    assert qrange(4) == (-7, 7)
    assert qrange(8, symmetric=False) == (0, 255)
    assert qrange(3, symmetric=False) == (0, 7)


@pytest.mark.parametrize("bits, exc", [(1, ValueError), (9, ValueError), (4.0, TypeError), (True, TypeError)])
def test_bad_bits(bits, exc):
    with pytest.raises(exc, match="bits"):
        quantize(torch.ones(2, 4), bits=bits)


def test_bad_inputs():
    with pytest.raises(TypeError, match="floating-point"):
        quantize(torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        quantize([[1.0, 2.0]])
    with pytest.raises(ValueError, match="group_size"):
        quantize(torch.ones(2, 4), group_size="row")
    with pytest.raises(ValueError, match="group_size"):
        quantize(torch.ones(2, 4), group_size=0)
    with pytest.raises(ValueError, match="at least 2 dims"):
        quantize(torch.ones(4), group_size="channel")


def test_group_size_must_divide_unless_pad():
    x = heavy_tailed((3, 160))
    with pytest.raises(ValueError, match=r"group_size=64 does not divide the last dimension \(160\)"):
        quantize(x, bits=4, group_size=64)
    qt = quantize(x, bits=4, group_size=64, pad=True)
    assert qt.scale.shape == (3, 3, 1)  # 64 + 64 + 32
    # the short last group gets its own scale: same as quantizing those 32 columns alone
    tail = quantize(x[:, 128:], bits=4, group_size=32)
    assert torch.equal(qt.codes[:, 128:], tail.codes)
    assert torch.allclose(qt.scale[:, 2], tail.scale[:, 0])


# ------------------------------------------------------------------------------ exact codes
def test_symmetric_codes_exact():
    x = torch.tensor([[0.5, -1.1, 0.26, 2.0], [0.1, 0.22, -0.4, 0.05]])
    qt = quantize(x, bits=8, group_size="tensor")
    assert qt.codes.dtype == torch.int8 and qt.zero_point is None
    assert qt.codes.tolist() == [[32, -70, 17, 127], [6, 14, -25, 3]]
    qt = quantize(x, bits=4, group_size="channel")
    assert qt.codes.tolist() == [[2, -4, 1, 7], [2, 4, -7, 1]]
    assert torch.allclose(qt.scale.flatten(), torch.tensor([2 / 7, 0.4 / 7]))


def test_affine_codes_exact():
    x = torch.tensor([[-1.0, 0.0, 1.0, 2.0]])
    qt = quantize(x, bits=2, symmetric=False, group_size="tensor")
    assert qt.codes.dtype == torch.uint8
    assert qt.zero_point.item() == 1 and qt.codes.tolist() == [[0, 1, 2, 3]]
    assert torch.equal(dequantize(qt), x)


def test_affine_zero_point_edge_cases():
    pos = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    qt = quantize(pos, bits=4, symmetric=False)
    assert qt.zero_point.item() == 0  # range widened to [0, 4]: zero stays representable
    neg = -pos
    assert quantize(neg, bits=4, symmetric=False).zero_point.item() == 15
    const = torch.full((2, 8), 3.0)
    assert torch.equal(fake_quantize(const, bits=4, symmetric=False), const)
    assert torch.equal(fake_quantize(const, bits=4, symmetric=True), const)
    zeros = torch.zeros(2, 8)
    for symmetric in (True, False):
        qt = quantize(zeros, bits=4, symmetric=symmetric)
        assert torch.isfinite(qt.scale).all()
        assert torch.equal(dequantize(qt), zeros)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", ["tensor", "channel", 32])
def test_error_within_half_step(bits, symmetric, group_size):
    x = heavy_tailed((8, 128), seed=bits)
    qt = quantize(x, bits=bits, symmetric=symmetric, group_size=group_size)
    lo, hi = qrange(bits, symmetric)
    assert int(qt.codes.min()) >= lo and int(qt.codes.max()) <= hi
    err = (dequantize(qt) - x).abs()
    step = qt.scale.expand(-1, -1, x.numel() // qt.scale.numel()).reshape(x.shape)
    assert (err <= step / 2 * (1 + 1e-5)).all()


def test_finer_groups_and_more_bits_help():
    x = heavy_tailed((16, 256))
    s = {g: sqnr(x, fake_quantize(x, bits=4, group_size=g)) for g in ("tensor", "channel", 128, 32)}
    assert s["tensor"] < s["channel"] < s[128] < s[32]
    by_bits = [sqnr(x, fake_quantize(x, bits=b, group_size=32)) for b in (3, 4, 8)]
    assert by_bits[0] < by_bits[1] < by_bits[2]
    assert 20 < by_bits[2] - by_bits[1] < 28  # ~6 dB per bit


def test_fp16_scales():
    x = heavy_tailed((4, 64))
    qt = quantize(x, bits=8, scale_dtype=torch.float16)
    assert torch.equal(qt.scale, qt.scale.half().float())


def test_sqnr():
    x = torch.tensor([1.0, -1.0])
    assert sqnr(x, x) == math.inf
    assert sqnr(x, torch.tensor([0.9, -1.1])) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="same shape"):
        sqnr(x, torch.ones(3))


# ----------------------------------------------------------------------------------- packing
def test_pack_int4_layout_and_round_trip():
    codes = torch.tensor([[1, 2, 15, 0], [7, 8, 0, 15]], dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (2, 2)
    assert packed.tolist() == [[0x21, 0x0F], [0x87, 0xF0]]  # first element in the LOW nibble
    assert torch.equal(unpack_int4(packed), codes)
    rand = torch.randint(0, 16, (5, 64), dtype=torch.uint8)
    assert torch.equal(unpack_int4(pack_int4(rand)), rand)


def test_pack_int4_bad_input():
    with pytest.raises(ValueError, match="even"):
        pack_int4(torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        pack_int4(torch.tensor([16, 0], dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        pack_int4(torch.tensor([1, 2]))


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_pack_bits_round_trip(bits):
    codes = torch.randint(0, 2**bits, (1001,), dtype=torch.uint8)
    packed = pack_bits(codes, bits)
    assert packed.numel() == math.ceil(1001 * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, 1001), codes)


def test_pack_bits_4_matches_pack_int4():
    codes = torch.randint(0, 16, (6, 32), dtype=torch.uint8)
    assert torch.equal(pack_bits(codes, 4), pack_int4(codes).reshape(-1))


# --------------------------------------------------------------------------- layers and models
@pytest.mark.parametrize("bits, symmetric, group_size", [(8, True, "channel"), (4, False, 16), (3, True, 32)])
def test_quantized_linear_matches_fake_quant(bits, symmetric, group_size):
    torch.manual_seed(0)
    lin = nn.Linear(64, 24)
    q = QuantizedLinear.from_float(lin, bits=bits, symmetric=symmetric, group_size=group_size)
    assert q.packed.dtype == torch.uint8 and q.packed.numel() == math.ceil(64 * 24 * bits / 8)
    assert q.scale.dtype == torch.float16
    w_hat = fake_quantize(
        lin.weight.detach(), bits=bits, symmetric=symmetric, group_size=group_size, scale_dtype=torch.float16
    )
    assert torch.equal(q.dequantized_weight(), w_hat)
    x = torch.randn(5, 64)
    assert torch.allclose(q(x), nn.functional.linear(x, w_hat, lin.bias), atol=1e-6)


def test_quantized_linear_handles_conv1d():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(nf=12, nx=32)  # weight (in=32, out=12)
    nn.init.normal_(conv.weight)
    lin = nn.Linear(32, 12)
    with torch.no_grad():
        lin.weight.copy_(conv.weight.t())
        lin.bias.copy_(conv.bias)
    x = torch.randn(3, 32)
    qc = QuantizedLinear.from_float(conv, bits=8)
    ql = QuantizedLinear.from_float(lin, bits=8)
    assert (qc.in_features, qc.out_features) == (32, 12)
    assert torch.allclose(qc(x), ql(x), atol=1e-6)
    assert (qc(x) - conv(x)).abs().max() < 0.01 * conv(x).abs().max()
    with pytest.raises(TypeError, match="nn.Linear or transformers Conv1D"):
        QuantizedLinear.from_float(nn.Conv2d(1, 1, 1))


@pytest.fixture(scope="module")
def tiny_llama():
    from course_lib.model import build_model, make_config

    return build_model(make_config("tiny"), seed=0).eval()


def test_quantize_model_swaps_linears(tiny_llama):
    n_linear = sum(isinstance(m, nn.Linear) for m in tiny_llama.modules())
    qm = quantize_model(tiny_llama, bits=8)
    swapped = [n for n, m in qm.named_modules() if isinstance(m, QuantizedLinear)]
    # every Linear except the lm_head, which is tied to the embedding
    assert len(swapped) == n_linear - 1 and "lm_head" not in swapped
    assert isinstance(tiny_llama.model.layers[0].mlp.up_proj, nn.Linear)  # original untouched
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        ref, out = tiny_llama(ids).logits, qm(ids).logits
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    skipped = quantize_model(tiny_llama, bits=8, skip=("mlp",))
    assert isinstance(skipped.model.layers[0].mlp.up_proj, nn.Linear)
    assert isinstance(skipped.model.layers[0].self_attn.q_proj, QuantizedLinear)


def test_quantize_model_bytes(tiny_llama):
    layer = tiny_llama.model.layers[0]
    fp32 = model_nbytes(layer)
    q8 = model_nbytes(quantize_model(layer, bits=8))
    q4 = model_nbytes(quantize_model(layer, bits=4, group_size=32))
    assert q4 < q8 < 0.3 * fp32


def test_quantize_model_bad_group_names_layer(tiny_llama):
    with pytest.raises(ValueError, match=r"layer 'model\.layers\.0\.self_attn\.q_proj'.*group_size=64"):
        quantize_model(tiny_llama, bits=4, group_size=64)  # hidden size 32
    qm = quantize_model(tiny_llama, bits=4, group_size=64, pad=True)
    assert isinstance(qm.model.layers[0].self_attn.q_proj, QuantizedLinear)
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_model("model")


def test_model_nbytes_counts_tied_once(tiny_llama):
    params = {id(p): p for p in tiny_llama.parameters()}
    expected = sum(p.numel() * 4 for p in params.values()) + sum(
        b.numel() * b.element_size() for b in tiny_llama.buffers()
    )
    assert model_nbytes(tiny_llama) == expected
    assert model_nbytes(nn.Linear(4, 2)) == 40


# ------------------------------------------------------------------------------------- GGUF
def test_dequantize_q4_1_hand_built_block():
    d, m = np.float16(0.5), np.float16(-2.0)
    q = np.arange(32) % 16  # weight j has code j % 16
    qs = (q[:16] | (q[16:] << 4)).astype(np.uint8)  # low nibbles: weights 0-15, high: 16-31
    block = np.concatenate([np.frombuffer(d.tobytes() + m.tobytes(), np.uint8), qs])
    assert block.size == Q4_1_BLOCK_BYTES
    w = dequantize_q4_1(block.tobytes())
    assert torch.equal(w, torch.tensor(q * 0.5 - 2.0, dtype=torch.float32))
    with pytest.raises(ValueError, match="20-byte"):
        dequantize_q4_1(block[:19])


def test_unpermute_matches_transformers():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = torch.randn(3 * 8, 5)
    ref = LlamaTensorProcessor()._reverse_permute_weights(w.numpy(), 3, 3)
    assert torch.equal(unpermute_llama_qk(w, 3), torch.from_numpy(ref))
    with pytest.raises(ValueError, match="heads"):
        unpermute_llama_qk(torch.randn(9, 2), 2)


@pytest.fixture(scope="module")
def smollm2_file():
    from course_lib.data import smollm2_gguf_path

    return smollm2_gguf_path()


def test_q4_1_matches_gguf_library(smollm2_file):
    import gguf

    data, kind, shape = read_gguf_tensor(smollm2_file, "blk.0.ffn_down.weight")
    assert kind == "Q4_1" and shape == (576, 1536)
    ref = gguf.quants.dequantize(data, gguf.GGMLQuantizationType.Q4_1)
    assert torch.equal(dequantize_q4_1(data), torch.from_numpy(np.array(ref)))
    with pytest.raises(KeyError, match="no tensor"):
        read_gguf_tensor(smollm2_file, "blk.0.nope")


@pytest.mark.slow
def test_q4_1_equals_transformers_weights(smollm2_file):
    """Our decoder reproduces transformers' SmolLM2 weights bit for bit (q/k after un-permuting)."""
    from course_lib.data import load_smollm2

    _, model = load_smollm2()
    layer = model.model.layers[5]
    cfg = model.config
    pairs = [
        ("attn_q", layer.self_attn.q_proj, cfg.num_attention_heads),
        ("attn_k", layer.self_attn.k_proj, cfg.num_key_value_heads),
        ("attn_v", layer.self_attn.v_proj, None),
        ("ffn_up", layer.mlp.up_proj, None),
    ]
    for name, module, heads in pairs:
        data, kind, _ = read_gguf_tensor(smollm2_file, f"blk.5.{name}.weight")
        w = dequantize_q4_1(data)
        if heads is not None:
            assert not torch.equal(w, module.weight.detach())  # the rows really are permuted
            w = unpermute_llama_qk(w, heads)
        assert torch.equal(w, module.weight.detach()), name


def test_linear_nbytes(tiny_llama):
    from course_lib.quantization import linear_nbytes

    cfg = tiny_llama.config
    d, inter, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    assert linear_nbytes(tiny_llama) == 4 * L * (4 * d * d + 3 * d * inter)  # lm_head is tied: left out
    q8 = quantize_model(tiny_llama, bits=8)
    assert 0.25 < linear_nbytes(q8) / linear_nbytes(tiny_llama) < 0.27
    with pytest.raises(TypeError, match="nn.Module"):
        linear_nbytes(None)
