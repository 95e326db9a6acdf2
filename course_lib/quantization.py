"""Weight quantization by hand: integer codes, scales, packing, quantized layers and GGUF Q4_1.

A quantized tensor is a tensor of small integers (*codes*) plus one or a few floats (*scales*,
and for affine quantization *zero points*) that map the codes back to real numbers::

    symmetric (absmax):  x ~ scale * q                 q in [-(2^(b-1) - 1), 2^(b-1) - 1]
    affine (zero point): x ~ scale * (q - zero_point)  q in [0, 2^b - 1]

One scale per tensor is cheapest but one outlier stretches the step for every weight; one per
output channel (row) or per *group* of consecutive weights in a row keeps outliers local, at the
cost of storing more scales. This module implements both schemes at all three granularities, with
the conventions most libraries share:

- groups run along the LAST dimension (for an ``nn.Linear`` weight ``(out, in)`` that is the input
  dimension, the one a matmul sums over: GPTQ, AWQ, llama.cpp and bitsandbytes do the same);
- symmetric codes use the restricted range ``[-qmax, qmax]`` so zero sits in the middle;
- affine ranges are widened to include 0 (as PyTorch and Jacob et al. 2018 do), so 0.0 is exactly
  representable and the zero point is an integer inside the code range;
- scales are rounded to ``scale_dtype`` *before* the codes are computed, so a layer that stores
  float16 scales reproduces exactly what :func:`quantize` promised.

Contents: :func:`qrange`, :func:`quantize` / :func:`dequantize` / :func:`fake_quantize`
(:class:`QuantizedTensor`), :func:`pack_int4` / :func:`unpack_int4` and the general
:func:`pack_bits` / :func:`unpack_bits`, :class:`QuantizedLinear` and :func:`quantize_model`,
:func:`model_nbytes`, :func:`sqnr`, and the GGUF side: :func:`dequantize_q4_1`,
:func:`read_gguf_tensor`, :func:`unpermute_llama_qk`.

Example
-------
>>> w = torch.tensor([[0.5, -1.0, 0.25, 2.0]])
>>> qt = quantize(w, bits=8, group_size="tensor")
>>> qt.codes.tolist(), round(float(qt.scale), 6)
([[32, -64, 16, 127]], 0.015748)
>>> bool((dequantize(qt) - w).abs().max() <= qt.scale.max() / 2)
True
"""

from __future__ import annotations

import copy
import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "qrange",
    "QuantizedTensor",
    "quantize",
    "dequantize",
    "fake_quantize",
    "pack_int4",
    "unpack_int4",
    "pack_bits",
    "unpack_bits",
    "QuantizedLinear",
    "quantize_model",
    "model_nbytes",
    "linear_nbytes",
    "sqnr",
    "Q4_1_BLOCK_WEIGHTS",
    "Q4_1_BLOCK_BYTES",
    "dequantize_q4_1",
    "read_gguf_tensor",
    "unpermute_llama_qk",
]


# --------------------------------------------------------------------------------------------
# Integer ranges and argument checks
# --------------------------------------------------------------------------------------------


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int between 2 and 8, got {type(bits).__name__} {bits!r}")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be between 2 and 8 (inclusive), got {bits}")
    return bits


def qrange(bits: int, symmetric: bool = True) -> tuple[int, int]:
    """The smallest and largest integer code for ``bits``-bit quantization.

    Symmetric: ``(-(2^(bits-1) - 1), 2^(bits-1) - 1)``, e.g. (-127, 127) for int8: the unused
    -128 keeps the grid symmetric around 0. Affine: ``(0, 2^bits - 1)``, e.g. (0, 15) for 4 bits.

    >>> qrange(8), qrange(4, symmetric=False)
    ((-127, 127), (0, 15))
    """
    _check_bits(bits)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


def _check_group_size(group_size, x: torch.Tensor, pad: bool):
    """Normalise ``group_size`` to "tensor", "channel" or a positive int, checking it fits ``x``."""
    if group_size is None:
        group_size = "channel"
    if isinstance(group_size, str):
        if group_size not in ("tensor", "channel"):
            raise ValueError(f"group_size must be 'tensor', 'channel' or a positive int, got {group_size!r}")
        if group_size == "channel" and x.dim() < 2:
            raise ValueError(
                f"group_size='channel' needs a tensor with at least 2 dims (one scale per row), "
                f"got shape {tuple(x.shape)}; use group_size='tensor' for a vector"
            )
        return group_size
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be 'tensor', 'channel' or a positive int, got {group_size!r}")
    if x.dim() < 1:
        raise ValueError("group_size as an int needs a tensor with at least 1 dim, got a scalar")
    n = x.shape[-1]
    if n % group_size and not pad:
        divisors = [g for g in (8, 16, 32, 64, 128, 256) if n % g == 0]
        raise ValueError(
            f"group_size={group_size} does not divide the last dimension ({n}) of a tensor of "
            f"shape {tuple(x.shape)}; group sizes that divide it: {divisors or 'none of 8..256'} "
            "(or pass pad=True to let the last group of each row be shorter)"
        )
    return group_size


def _grouped(x: torch.Tensor, group_size) -> torch.Tensor:
    """View ``x`` as ``(R, G, g)``: R rows, G groups per row, g values per group (zero-padded)."""
    if group_size == "tensor":
        return x.reshape(1, 1, -1)
    if group_size == "channel":
        return x.reshape(x.shape[0], 1, -1)
    rows = x.reshape(-1, x.shape[-1])
    n_groups = math.ceil(x.shape[-1] / group_size)
    rows = F.pad(rows, (0, n_groups * group_size - x.shape[-1]))  # zeros: no effect on absmax/range
    return rows.reshape(rows.shape[0], n_groups, group_size)


# --------------------------------------------------------------------------------------------
# quantize / dequantize
# --------------------------------------------------------------------------------------------


@dataclass
class QuantizedTensor:
    """Integer codes plus what it takes to turn them back into floats.

    Attributes
    ----------
    codes : torch.Tensor, int8 (symmetric) or uint8 (affine), same shape as the original tensor.
    scale : torch.Tensor, float, shape ``(R, G, 1)``: R rows (1 for per-tensor), G groups per row.
    zero_point : torch.Tensor of int32 with the shape of ``scale`` (affine), or None (symmetric).
    bits : int, symmetric : bool, group_size : "tensor", "channel" or int.
    shape : torch.Size of the original tensor.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    bits: int
    symmetric: bool
    group_size: str | int
    shape: torch.Size

    @property
    def nbytes(self) -> int:
        """Bytes to store it: codes bit-packed at ``bits`` each, scales as float16, zero points
        as one byte each (the layout :class:`QuantizedLinear` uses)."""
        n = math.ceil(self.codes.numel() * self.bits / 8) + 2 * self.scale.numel()
        return n + (self.zero_point.numel() if self.zero_point is not None else 0)

    def dequantize(self) -> torch.Tensor:
        return dequantize(self)


def quantize(
    x: torch.Tensor,
    bits: int = 8,
    symmetric: bool = True,
    group_size="channel",
    scale_dtype: torch.dtype = torch.float32,
    pad: bool = False,
) -> QuantizedTensor:
    """Round ``x`` to ``bits``-bit integer codes with per-tensor, per-channel or per-group scales.

    Parameters
    ----------
    x : torch.Tensor (float), any shape; for "channel" at least 2-D (rows = dim 0).
    bits : int in 2..8.
    symmetric : bool
        True: absmax scaling, ``scale = max|x| / qmax``, no zero point.
        False: affine, ``scale = (max - min) / (2^bits - 1)`` over the range widened to include 0,
        ``zero_point = round(-min / scale)``.
    group_size : "tensor", "channel" (one scale per row; None means the same) or int g
        (one scale per g consecutive values of the last dimension; g must divide it unless ``pad``).
    scale_dtype : torch.dtype
        Scales are rounded to this dtype before the codes are computed (float16 = how they are stored).
    pad : bool
        Allow a last dimension that g does not divide: each row's last group is then shorter.

    Returns
    -------
    QuantizedTensor with ``codes`` shaped like ``x`` and ``scale`` shaped ``(R, G, 1)``.

    Examples
    --------
    >>> qt = quantize(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), bits=2, symmetric=False)
    >>> qt.codes.tolist(), qt.zero_point.flatten().tolist()
    ([[0, 1, 2, 3]], [0])
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError("x is empty: nothing to quantize")
    _check_bits(bits)
    group_size = _check_group_size(group_size, x, pad)
    qmin, qmax = qrange(bits, symmetric)
    g = _grouped(x.detach().float(), group_size)  # (R, G, g)
    tiny = torch.finfo(scale_dtype).tiny
    if symmetric:
        absmax = g.abs().amax(dim=-1, keepdim=True)
        scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
        scale = scale.to(scale_dtype).float().clamp_min(tiny)
        q = torch.clamp(torch.round(g / scale), qmin, qmax)
        zero_point = None
        codes = q.to(torch.int8)
    else:
        lo = g.amin(dim=-1, keepdim=True).clamp_max(0.0)
        hi = g.amax(dim=-1, keepdim=True).clamp_min(0.0)
        span = hi - lo
        scale = torch.where(span > 0, span / (qmax - qmin), torch.ones_like(span))
        scale = scale.to(scale_dtype).float().clamp_min(tiny)
        zero_point = torch.clamp(torch.round(-lo / scale), qmin, qmax)
        q = torch.clamp(torch.round(g / scale) + zero_point, qmin, qmax)
        zero_point = zero_point.to(torch.int32)
        codes = q.to(torch.uint8)
    codes = _ungroup(codes, x.shape, group_size)
    return QuantizedTensor(
        codes=codes,
        scale=scale,
        zero_point=zero_point,
        bits=bits,
        symmetric=symmetric,
        group_size=group_size,
        shape=x.shape,
    )


def _ungroup(g: torch.Tensor, shape: torch.Size, group_size) -> torch.Tensor:
    """Inverse of :func:`_grouped` (drops the padding)."""
    if isinstance(group_size, int):
        g = g.reshape(g.shape[0], -1)[:, : shape[-1]]
    return g.reshape(shape)


def dequantize(qt: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Map codes back to floats: ``scale * q`` (symmetric) or ``scale * (q - zero_point)`` (affine).

    Returns a tensor of ``qt.shape`` and ``dtype``.
    """
    if not isinstance(qt, QuantizedTensor):
        raise TypeError(f"qt must be a QuantizedTensor (from quantize), got {type(qt).__name__}")
    q = _grouped(qt.codes.float(), qt.group_size)
    if qt.zero_point is not None:
        # padded positions hold code 0 here; they are cropped by _ungroup, so their value is moot
        q = q - qt.zero_point.float()
    return _ungroup(q * qt.scale.float(), qt.shape, qt.group_size).to(dtype)


def fake_quantize(
    x: torch.Tensor,
    bits: int = 8,
    symmetric: bool = True,
    group_size="channel",
    scale_dtype: torch.dtype = torch.float32,
    pad: bool = False,
) -> torch.Tensor:
    """``dequantize(quantize(x, ...))``: what the model actually computes with, in ``x``'s dtype."""
    qt = quantize(x, bits=bits, symmetric=symmetric, group_size=group_size, scale_dtype=scale_dtype, pad=pad)
    return dequantize(qt, dtype=x.dtype)


def sqnr(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in decibels: ``10 log10(sum x^2 / sum (x - x_hat)^2)``.

    Each extra bit buys about 6 dB on a uniform grid. Returns ``inf`` when ``approx`` is exact.

    >>> round(sqnr(torch.tensor([1.0, -1.0]), torch.tensor([0.9, -1.1])), 2)
    20.0
    """
    reference, approx = torch.as_tensor(reference).double(), torch.as_tensor(approx).double()
    if reference.shape != approx.shape:
        raise ValueError(
            f"reference and approx must have the same shape, got {tuple(reference.shape)} "
            f"and {tuple(approx.shape)}"
        )
    noise = (reference - approx).pow(2).sum()
    if noise == 0:
        return math.inf
    return float(10 * torch.log10(reference.pow(2).sum() / noise))


# --------------------------------------------------------------------------------------------
# Packing codes into bytes
# --------------------------------------------------------------------------------------------


def _check_codes(codes: torch.Tensor, bits: int, name: str = "codes") -> None:
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype != torch.uint8:
        raise TypeError(
            f"{name} must be uint8 (unsigned codes; shift signed codes by -qmin first), got {codes.dtype}"
        )
    if codes.numel() and int(codes.max()) >= 2**bits:
        raise ValueError(f"{name} must be in [0, {2**bits - 1}] for {bits} bits, found {int(codes.max())}")


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack pairs of 4-bit codes into bytes: element ``2i`` in the low nibble, ``2i+1`` in the high.

    Parameters
    ----------
    codes : uint8 tensor with values in [0, 15] and an even last dimension n.

    Returns
    -------
    uint8 tensor of shape ``(..., n // 2)``.

    >>> pack_int4(torch.tensor([1, 2, 15, 0], dtype=torch.uint8)).tolist()
    [33, 15]
    """
    _check_codes(codes, 4)
    if codes.dim() == 0 or codes.shape[-1] % 2:
        raise ValueError(
            f"codes must have an even last dimension to pack two per byte, got shape {tuple(codes.shape)}"
        )
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: ``(..., m)`` bytes -> ``(..., 2m)`` codes in [0, 15]."""
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise TypeError(
            f"packed must be a uint8 torch.Tensor, got {getattr(packed, 'dtype', type(packed).__name__)}"
        )
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=-1).reshape(*packed.shape[:-1], 2 * packed.shape[-1])


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned ``bits``-bit codes into a flat byte stream, least significant bit first.

    Code ``i`` occupies bits ``[i*bits, (i+1)*bits)`` of the stream, so for 4 bits this is the
    same layout as :func:`pack_int4`. Returns a 1-D uint8 tensor of ``ceil(numel * bits / 8)`` bytes.

    >>> pack_bits(torch.tensor([1, 2, 3], dtype=torch.uint8), 3).tolist()  # 001 010 011 -> bits
    [209, 0]
    """
    _check_bits(bits)
    _check_codes(codes, bits)
    flat = codes.reshape(-1)
    if bits == 8:
        return flat.clone()
    if bits == 4 and flat.numel() % 2 == 0:
        return pack_int4(flat)
    stream = ((flat.unsqueeze(1) >> torch.arange(bits, dtype=torch.uint8)) & 1).reshape(-1)
    stream = F.pad(stream, (0, (-stream.numel()) % 8)).reshape(-1, 8)
    return (stream << torch.arange(8, dtype=torch.uint8)).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` codes as a 1-D uint8 tensor."""
    _check_bits(bits)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise TypeError(
            f"packed must be a uint8 torch.Tensor, got {getattr(packed, 'dtype', type(packed).__name__)}"
        )
    if packed.numel() * 8 < numel * bits:
        raise ValueError(f"packed holds {packed.numel()} bytes, too few for {numel} codes of {bits} bits")
    if bits == 8:
        return packed[:numel].clone()
    if bits == 4:
        return unpack_int4(packed)[:numel]
    stream = ((packed.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(-1)
    stream = stream[: numel * bits].reshape(numel, bits)
    return (stream << torch.arange(bits, dtype=torch.uint8)).sum(dim=1, dtype=torch.uint8)


# --------------------------------------------------------------------------------------------
# Quantized layers and models
# --------------------------------------------------------------------------------------------


def _is_conv1d(module: nn.Module) -> bool:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a course dependency
        return False
    return isinstance(module, Conv1D)


class QuantizedLinear(nn.Module):
    """A weight-only quantized drop-in for ``nn.Linear`` (and GPT-2's ``Conv1D``).

    Stores the weight as bit-packed unsigned codes (uint8 buffer), float16 scales and, for affine
    quantization, uint8 zero points; the bias stays in float. ``forward`` dequantizes the weight
    and runs an ordinary float matmul: memory shrinks, arithmetic does not (fast int kernels are
    what torch.ao / llama.cpp / GPU libraries add on top).

    Build one with :meth:`from_float`.

    Shapes: input ``(..., in_features)`` -> output ``(..., out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        symmetric: bool,
        group_size,
        packed: torch.Tensor,
        scale: torch.Tensor,
        zero_point: torch.Tensor | None,
        bias: torch.Tensor | None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.symmetric, self.group_size = bits, symmetric, group_size
        self.register_buffer("packed", packed)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    @classmethod
    def from_float(
        cls, module: nn.Module, bits: int = 8, symmetric: bool = True, group_size="channel", pad: bool = False
    ) -> "QuantizedLinear":
        """Quantize an ``nn.Linear`` (weight ``(out, in)``) or a ``Conv1D`` (weight ``(in, out)``)."""
        if isinstance(module, nn.Linear):
            weight = module.weight.detach()
        elif _is_conv1d(module):
            weight = module.weight.detach().t()  # Conv1D computes x @ W with W (in, out)
        else:
            raise TypeError(
                f"module must be an nn.Linear or transformers Conv1D, got {type(module).__name__}"
            )
        qt = quantize(
            weight, bits=bits, symmetric=symmetric, group_size=group_size, scale_dtype=torch.float16, pad=pad
        )
        qmin, _ = qrange(bits, symmetric)
        unsigned = (qt.codes.to(torch.int16) - qmin).to(torch.uint8)  # symmetric codes shifted to >= 0
        zero_point = qt.zero_point.to(torch.uint8) if qt.zero_point is not None else None
        return cls(
            weight.shape[1],
            weight.shape[0],
            bits,
            symmetric,
            qt.group_size,
            pack_bits(unsigned, bits),
            qt.scale.to(torch.float16),
            zero_point,
            module.bias,
        )

    def quantized_weight(self) -> QuantizedTensor:
        """The stored weight as a :class:`QuantizedTensor` (signed codes for symmetric)."""
        shape = torch.Size((self.out_features, self.in_features))
        codes = unpack_bits(self.packed, self.bits, shape.numel()).reshape(shape)
        if self.symmetric:
            codes = (codes.to(torch.int16) + qrange(self.bits, True)[0]).to(torch.int8)
        zp = self.zero_point.to(torch.int32) if self.zero_point is not None else None
        return QuantizedTensor(codes, self.scale, zp, self.bits, self.symmetric, self.group_size, shape)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight the layer computes with, ``(out_features, in_features)``."""
        return dequantize(self.quantized_weight(), dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight(x.dtype), self.bias)

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "affine"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
            f"{kind}, group_size={self.group_size!r}, bias={self.bias is not None}"
        )


def quantize_model(
    model: nn.Module,
    bits: int = 8,
    group_size="channel",
    symmetric: bool = True,
    skip=(),
    pad: bool = False,
    inplace: bool = False,
) -> nn.Module:
    """Replace every ``nn.Linear`` / ``Conv1D`` of ``model`` by a :class:`QuantizedLinear`.

    Parameters
    ----------
    model : torch.nn.Module (e.g. a transformers model).
    bits : int in 2..8.
    group_size : "channel" (or None), "tensor" or int, as in :func:`quantize`.
    symmetric : bool, absmax (True) or affine (False).
    skip : iterable of str
        Leave layers whose qualified name contains any of these in float (e.g. ``("classifier",)``).
        Layers whose weight is tied to an ``nn.Embedding`` (a tied ``lm_head``) are always left
        alone: quantizing one copy would untie them and store the matrix twice.
    pad : bool, let groups that do not divide a layer's input width end short (see :func:`quantize`).
    inplace : bool, modify ``model`` itself instead of a deep copy.

    Returns
    -------
    The quantized model (same class, layers swapped), in eval mode.

    Examples
    --------
    >>> qm = quantize_model(nn.Sequential(nn.Linear(64, 8)), bits=4, group_size=32)
    >>> type(qm[0]).__name__, qm[0].packed.dtype, tuple(qm[0].packed.shape)
    ('QuantizedLinear', torch.uint8, (256,))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_bits(bits)
    if isinstance(skip, str):
        skip = (skip,)
    skip = tuple(skip)
    if not inplace:
        model = copy.deepcopy(model)
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    targets = [
        (name, m)
        for name, m in model.named_modules()
        if (isinstance(m, nn.Linear) or _is_conv1d(m))
        and id(m.weight) not in tied
        and not any(s in name for s in skip)
    ]
    for name, module in targets:
        try:
            new = QuantizedLinear.from_float(
                module, bits=bits, symmetric=symmetric, group_size=group_size, pad=pad
            )
        except ValueError as e:
            raise ValueError(f"cannot quantize layer {name!r}: {e}") from None
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    targets = module = new = None  # (a model without linear layers never set module and new)
    from .adapt import release_free_memory

    release_free_memory()  # the float weights just replaced are garbage: hand their pages back
    return model.eval()


def model_nbytes(model: nn.Module) -> int:
    """Bytes held by a model's parameters and buffers (tied/shared tensors counted once).

    >>> model_nbytes(nn.Linear(4, 2))  # (8 weights + 2 biases) * 4 bytes
    40
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel(), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def linear_nbytes(model: nn.Module) -> int:
    """Bytes of the layers :func:`quantize_model` swaps (or has swapped): every ``QuantizedLinear``,
    ``nn.Linear`` and ``Conv1D`` whose weight is not tied to an embedding, weight and bias.

    "Weight bytes relative to fp32" compares this number before and after quantization, which
    leaves out the embeddings and norms that stay in float either way.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return sum(
        model_nbytes(m)
        for m in model.modules()
        if isinstance(m, QuantizedLinear)
        or ((isinstance(m, nn.Linear) or _is_conv1d(m)) and id(m.weight) not in tied)
    )


# --------------------------------------------------------------------------------------------
# GGUF (llama.cpp) Q4_1
# --------------------------------------------------------------------------------------------

Q4_1_BLOCK_WEIGHTS = 32  # weights per block
Q4_1_BLOCK_BYTES = 20  # float16 d (scale) + float16 m (minimum) + 16 bytes of 4-bit codes


def dequantize_q4_1(raw, shape=None) -> torch.Tensor:
    """Decode GGUF/ggml Q4_1 blocks: ``w = d * q + m`` per block of 32 weights.

    Block layout (ggml's ``block_q4_1``, 20 bytes): ``d`` float16 (scale), ``m`` float16 (the
    block minimum), then 16 bytes ``qs``; weight ``j < 16`` is the LOW nibble of ``qs[j]`` and
    weight ``j + 16`` its HIGH nibble (not neighbouring pairs as in :func:`pack_int4`).

    Parameters
    ----------
    raw : uint8 numpy array, torch tensor or bytes; its size a multiple of 20 bytes. A 2-D array
        (rows, bytes per row), as ``gguf.GGUFReader`` gives, keeps its rows.
    shape : tuple or None, reshape the result (default: ``(rows, -1)`` for 2-D input, else 1-D).

    Returns
    -------
    torch.float32 tensor.
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(raw, dtype=np.uint8)
    if not isinstance(raw, torch.Tensor):
        raw = torch.from_numpy(np.array(raw, copy=True))  # GGUFReader's memmap is read-only
    if raw.dtype != torch.uint8:
        raise TypeError(f"raw must hold uint8 bytes, got dtype {raw.dtype}")
    if raw.numel() % Q4_1_BLOCK_BYTES:
        raise ValueError(
            f"raw must be a whole number of {Q4_1_BLOCK_BYTES}-byte Q4_1 blocks, got {raw.numel()} bytes"
        )
    blocks = raw.reshape(-1, Q4_1_BLOCK_BYTES)
    d = blocks[:, 0:2].contiguous().view(torch.float16).float()  # (n_blocks, 1)
    m = blocks[:, 2:4].contiguous().view(torch.float16).float()
    qs = blocks[:, 4:]
    q = torch.cat([qs & 0x0F, qs >> 4], dim=1).float()  # (n_blocks, 32)
    w = q * d + m
    if shape is not None:
        return w.reshape(shape)
    return w.reshape(raw.shape[0], -1) if raw.dim() == 2 else w.reshape(-1)


# GGUF metadata value types -> struct format (gguf spec: github.com/ggml-org/ggml/blob/master/docs/gguf.md)
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


@lru_cache(maxsize=4)
def _gguf_tensor_index(path: str) -> dict:
    """``{name: (type_id, shape (rows, cols), absolute byte offset)}`` of a GGUF (v2/v3) file.

    A minimal header walk: ``gguf.GGUFReader`` also decodes every metadata array (SmolLM2's
    49,152 tokens and 48,900 merges) into Python objects, which takes a minute on a busy laptop;
    here they are skipped.
    """
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def string():
        nonlocal pos
        n = take("Q")
        pos += n
        return bytes(buf[pos - n : pos]).decode("utf-8")

    def skip_value(vtype):
        nonlocal pos
        if vtype == _GGUF_STRING:
            n = take("Q")  # not `pos += take(...)`: that reads pos before take() moves it
            pos += n
        elif vtype == _GGUF_ARRAY:
            item_type, count = take("I"), take("Q")
            if item_type in _GGUF_SCALARS:
                pos += count * struct.calcsize("<" + _GGUF_SCALARS[item_type])
            else:
                for _ in range(count):
                    skip_value(item_type)
        else:
            pos += struct.calcsize("<" + _GGUF_SCALARS[vtype])

    if bytes(buf[:4]) != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file (magic bytes {bytes(buf[:4])!r})")
    pos = 4
    version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    alignment = 32
    for _ in range(n_kv):
        key, vtype = string(), take("I")
        if key == "general.alignment":
            alignment = take(_GGUF_SCALARS[vtype])
        else:
            skip_value(vtype)
    infos = []
    for _ in range(n_tensors):
        name, n_dims = string(), take("I")
        dims = [take("Q") for _ in range(n_dims)]
        type_id, offset = take("I"), take("Q")
        infos.append((name, type_id, tuple(reversed(dims)), offset))  # GGUF lists fastest dim first
    data_start = (pos + alignment - 1) // alignment * alignment
    return {name: (type_id, shape, data_start + offset) for name, type_id, shape, offset in infos}


def read_gguf_tensor(path, name: str):
    """One tensor of a GGUF file, raw: ``(data, type_name, shape)``.

    Parameters
    ----------
    path : str or Path of a .gguf file.
    name : str, a GGUF tensor name such as "blk.0.attn_q.weight".

    Returns
    -------
    data : numpy array, read-only view of the file. Quantized types: uint8 of shape
        ``(rows, bytes per row)`` (each row a run of blocks, as ``gguf.GGUFReader`` gives);
        F32/F16: the values, shape ``shape``.
    type_name : str, e.g. "Q4_1", "Q8_0", "F32".
    shape : tuple, the PyTorch shape ``(rows, cols)`` (GGUF lists dimensions fastest first).
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no GGUF file at {path}")
    index = _gguf_tensor_index(str(path))
    if name not in index:
        raise KeyError(f"no tensor {name!r} in {path.name}; it has e.g. {list(index)[:6]}")
    type_id, shape, offset = index[name]
    qtype = GGMLQuantizationType(type_id)
    block_weights, block_bytes = GGML_QUANT_SIZES[qtype]
    n_bytes = math.prod(shape) // block_weights * block_bytes
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(n_bytes,))
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        data = raw.view(np.float32 if qtype == GGMLQuantizationType.F32 else np.float16).reshape(shape)
    else:
        data = raw.reshape(*shape[:-1], shape[-1] // block_weights * block_bytes)
    return data, qtype.name, shape


def unpermute_llama_qk(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's row permutation of Llama ``attn_q`` / ``attn_k`` weights.

    Hugging Face's Llama applies RoPE to the two HALVES of each head (``rotate_half``: dims i and
    i + d/2 form a pair); llama.cpp rotates NEIGHBOURING dims (2i, 2i+1), as Meta's original code
    did. The GGUF converter therefore reorders each head's rows so pairs become neighbours;
    transformers' GGUF loader undoes it exactly like this. ``n_heads`` is the number of heads in
    this matrix (``num_key_value_heads`` for k).

    Shape: ``(n_heads * head_dim, in)`` -> same shape.
    """
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"weight has {rows} rows, not divisible into {n_heads} heads of even size")
    head_dim = rows // n_heads
    w = weight.reshape(n_heads, head_dim // 2, 2, *weight.shape[1:])
    return w.transpose(1, 2).reshape(weight.shape)
