"""Causal self-attention from scratch: the mask, scaled dot-product attention, RoPE and a KV cache.

Read top to bottom, in the order data flows through an attention layer::

    causal_mask(q_len, kv_len)          which key positions each query may look at
    scaled_dot_product_attention(...)   softmax(q k^T / sqrt(d)) v, the heart of it
    rope_cos_sin(...) / apply_rope(...) rotary position embeddings (Llama's convention)
    KVCache                             keys/values of earlier tokens, kept for generation
    CausalSelfAttention                 multi-head attention with q/k/v/o projections, RoPE, cache

Shapes use ``B`` batch, ``H`` heads, ``T`` sequence length, ``D`` head size, ``C = H * D`` model
width. Everything here follows the layout and naming of ``transformers``' Llama
(``q_proj``/``k_proj``/``v_proj``/``o_proj``, ``rotate_half`` RoPE), so the weights of a
``LlamaAttention`` layer can be copied in with :meth:`CausalSelfAttention.from_llama` and the two
give the same numbers. That is the point of the lesson: nothing in the library is magic.

Example
-------
>>> import torch
>>> q = k = v = torch.randn(1, 2, 5, 8)            # (B, H, T, D)
>>> out = scaled_dot_product_attention(q, k, v, causal=True)
>>> ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
>>> torch.allclose(out, ref, atol=1e-6)
True
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ._validation import check_positive_int, check_tensor

__all__ = [
    "causal_mask",
    "scaled_dot_product_attention",
    "rope_cos_sin",
    "rotate_half",
    "apply_rope",
    "KVCache",
    "CausalSelfAttention",
]


def causal_mask(q_len: int, kv_len: int | None = None, device=None) -> torch.Tensor:
    """Boolean causal mask, ``True`` where a query may attend to a key.

    The queries are the *last* ``q_len`` positions of a sequence of ``kv_len`` tokens (with a KV
    cache, the keys include earlier tokens), so query ``i`` sits at absolute position
    ``kv_len - q_len + i`` and may see keys ``0 .. kv_len - q_len + i``: itself and the past,
    never the future. Without a cache ``kv_len == q_len`` and this is the lower triangle.

    Parameters
    ----------
    q_len : int
        Number of query positions.
    kv_len : int, optional
        Number of key positions (default ``q_len``); must be ``>= q_len``.

    Returns
    -------
    torch.BoolTensor of shape ``(q_len, kv_len)``.

    Examples
    --------
    >>> causal_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    >>> causal_mask(1, 4).int()          # one new token sees the 3 cached ones and itself
    tensor([[1, 1, 1, 1]], dtype=torch.int32)
    """
    check_positive_int("q_len", q_len)
    kv_len = q_len if kv_len is None else kv_len
    check_positive_int("kv_len", kv_len)
    if kv_len < q_len:
        raise ValueError(
            f"kv_len must be >= q_len (keys include every query), got q_len={q_len}, kv_len={kv_len}"
        )
    return torch.ones(q_len, kv_len, dtype=torch.bool, device=device).tril(diagonal=kv_len - q_len)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    return_weights: bool = False,
):
    """``softmax(q k^T / sqrt(D) + mask) v``, written out so every step can be inspected.

    Why ``1/sqrt(D)``: with unit-variance q and k, a dot product over ``D`` dimensions has
    variance ``D``; without the scale the softmax saturates (one weight ~1, the rest ~0) and its
    gradients vanish. Masked positions get ``-inf`` before the softmax, so their weight is exactly 0.

    Parameters
    ----------
    q : Tensor ``(..., Tq, D)``
        Queries (typically ``(B, H, Tq, D)``).
    k, v : Tensor ``(..., Tk, D)`` and ``(..., Tk, Dv)``
        Keys and values; leading dimensions must broadcast with ``q``'s.
    mask : BoolTensor broadcastable to ``(..., Tq, Tk)``, optional
        ``True`` = may attend (``torch.nn.functional.scaled_dot_product_attention``'s convention).
    causal : bool
        Apply :func:`causal_mask` (combined with ``mask`` if both are given).
    return_weights : bool
        Also return the attention weights ``(..., Tq, Tk)`` (rows sum to 1).

    Returns
    -------
    out : Tensor ``(..., Tq, Dv)``, and ``weights`` if ``return_weights``.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x)
        if x.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., T, D), got {tuple(x.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same last dimension (head size), got "
            f"q {tuple(q.shape)} and k {tuple(k.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of positions, got k {tuple(k.shape)} and v {tuple(v.shape)}"
        )
    t_q, t_k = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Tq, Tk)
    if causal:
        cm = causal_mask(t_q, t_k, device=q.device)
        mask = cm if mask is None else (mask.to(torch.bool) & cm)
    if mask is not None:
        check_tensor("mask", mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = may attend), got dtype {mask.dtype}")
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # over the keys
    out = weights @ v  # (..., Tq, Dv)
    return (out, weights) if return_weights else out


def rope_cos_sin(positions, head_dim: int, base: float = 10000.0, dtype=torch.float32):
    """Cosines and sines of rotary position embeddings (RoFormer; Llama's layout).

    Each pair of channels ``(j, j + D/2)`` is rotated by the angle ``position * base**(-2j/D)``:
    fast rotations for the first channels, slow ones for the last. Because a rotation by ``m``
    followed by the inverse rotation by ``n`` is a rotation by ``m - n``, the score
    ``rope(q, m) . rope(k, n)`` depends only on the *relative* position ``m - n``.

    Parameters
    ----------
    positions : int or LongTensor ``(T,)`` / ``(B, T)``
        Absolute positions; an int ``T`` means ``0 .. T-1``.
    head_dim : int
        Head size ``D`` (even).
    base : float
        Llama's ``rope_theta`` (10,000 by default).

    Returns
    -------
    cos, sin : Tensors ``(*positions.shape, D)``.
    """
    check_positive_int("head_dim", head_dim)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE (channels are rotated in pairs), got {head_dim}")
    if isinstance(positions, int):
        positions = torch.arange(positions)
    check_tensor("positions", positions)
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = positions.to(torch.float32)[..., None] * inv_freq.to(positions.device)  # (..., D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (..., D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last dimension (a 90-degree rotation)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``(B, H, T, D)`` by the angles in ``cos``/``sin`` ``(T, D)`` or ``(B, T, D)``."""
    check_tensor("x", x, ndim=4)
    if cos.shape[-1] != x.shape[-1] or cos.shape[-2] != x.shape[-2]:
        raise ValueError(
            f"cos/sin must end in (T, D) = {tuple(x.shape[-2:])} to match x, got {tuple(cos.shape)}"
        )
    if cos.dim() == 3:  # (B, T, D) -> (B, 1, T, D): same angles for every head
        cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Keys and values of the tokens seen so far, one entry per layer.

    Generating token ``t`` only needs the new token's query, but it attends to the keys and
    values of all ``t`` earlier tokens. Recomputing them costs ``O(t)`` work per layer per step
    (``O(T^2)`` for a whole generation); keeping them costs memory instead:
    ``2 * layers * B * H * T * D`` numbers. :attr:`nbytes` reports it.

    Examples
    --------
    >>> cache = KVCache()
    >>> k, v = cache.update(0, torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    >>> k, v = cache.update(0, torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    >>> tuple(k.shape), cache.length
    ((1, 2, 4, 4), 4)
    """

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append ``k``, ``v`` ``(B, H, T_new, D)`` for ``layer``; return all keys/values so far."""
        check_tensor("k", k, ndim=4)
        check_tensor("v", v, ndim=4)
        if layer in self.keys:
            k = torch.cat((self.keys[layer], k), dim=-2)
            v = torch.cat((self.values[layer], v), dim=-2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    @property
    def length(self) -> int:
        """Number of cached positions (0 when empty)."""
        return next(iter(self.keys.values())).shape[-2] if self.keys else 0

    @property
    def nbytes(self) -> int:
        """Bytes held by all cached keys and values."""
        return sum(t.numel() * t.element_size() for d in (self.keys, self.values) for t in d.values())


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with RoPE, laid out like ``transformers``' Llama.

    ``x (B, T, C)`` is projected to queries, keys and values, split into ``n_heads`` heads of size
    ``D = C / n_heads``; each head attends independently (different heads learn different
    patterns), then the heads are concatenated and mixed by ``o_proj``. With
    ``n_kv_heads < n_heads`` groups of query heads share one key/value head (grouped-query
    attention, which shrinks the KV cache).

    Parameters
    ----------
    d_model : int
        Model width ``C``.
    n_heads : int
        Number of query heads; must divide ``d_model``.
    n_kv_heads : int, optional
        Number of key/value heads (default ``n_heads``); must divide ``n_heads``.
    rope_base : float or None
        RoPE ``theta``; ``None`` disables RoPE (use learned position embeddings instead).
    use_sdpa : bool
        Use ``torch.nn.functional.scaled_dot_product_attention`` (fused kernel, never builds the
        ``T x T`` matrix on its fast paths) instead of :func:`scaled_dot_product_attention`.
    layer_idx : int
        Key of this layer in a :class:`KVCache`.

    Examples
    --------
    >>> attn = CausalSelfAttention(d_model=16, n_heads=4)
    >>> attn(torch.randn(2, 5, 16)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        rope_base: float | None = 10000.0,
        use_sdpa: bool = False,
        layer_idx: int = 0,
    ):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("n_heads", n_heads)
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        check_positive_int("n_kv_heads", n_kv_heads)
        if d_model % n_heads:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={d_model}, n_heads={n_heads}"
            )
        if n_heads % n_kv_heads:
            raise ValueError(
                f"n_heads must be divisible by n_kv_heads, got n_heads={n_heads}, n_kv_heads={n_kv_heads}"
            )
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.rope_base, self.use_sdpa, self.layer_idx = rope_base, use_sdpa, layer_idx
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, return_weights: bool = False):
        """Attend over ``x`` ``(B, T, C)`` (plus any cached tokens); returns ``(B, T, C)``.

        With a ``cache``, ``x`` holds only the new tokens: their positions continue after the
        cached ones, and their keys/values are appended to the cache.
        ``return_weights=True`` also returns the weights ``(B, H, T, T_total)`` (from-scratch path).
        """
        check_tensor("x", x, ndim=3)
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x must have last dimension d_model={self.d_model}, got {tuple(x.shape)}")
        B, T, _ = x.shape
        past = cache.length if cache is not None else 0
        # (B, T, C) -> (B, H, T, D): each head gets its own slice of channels
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope_base is not None:
            cos, sin = rope_cos_sin(
                torch.arange(past, past + T, device=x.device), self.head_dim, self.rope_base, dtype=x.dtype
            )
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        if self.n_kv_heads != self.n_heads:  # grouped-query attention: share k/v across groups
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        mask = causal_mask(T, k.shape[-2], device=x.device)
        weights = None
        if self.use_sdpa and not return_weights:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            out, weights = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # re-join heads
        out = self.o_proj(out)
        return (out, weights) if return_weights else out

    @classmethod
    def from_llama(cls, llama_attention: nn.Module, config, use_sdpa: bool = False) -> "CausalSelfAttention":
        """Build a copy of a ``transformers`` ``LlamaAttention`` layer (same weights, same output).

        Parameters
        ----------
        llama_attention : ``LlamaAttention``
            e.g. ``model.model.layers[0].self_attn``.
        config : ``LlamaConfig``
            The model's config (head counts, ``rope_theta``).
        """
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if not isinstance(getattr(llama_attention, name, None), nn.Linear):
                raise TypeError(
                    f"llama_attention must be a LlamaAttention with nn.Linear {name}, "
                    f"got {type(llama_attention).__name__}"
                )
        if getattr(llama_attention.q_proj, "bias", None) is not None:
            raise ValueError(
                "attention_bias=True is not supported: build the LlamaConfig with attention_bias=False"
            )
        rope = getattr(config, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"only default RoPE is supported, got rope_type={rope.get('rope_type')!r}")
        attn = cls(
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads,
            rope_base=float(rope.get("rope_theta", 10000.0)),
            use_sdpa=use_sdpa,
            layer_idx=getattr(llama_attention, "layer_idx", 0) or 0,
        )
        if attn.head_dim != getattr(config, "head_dim", attn.head_dim):
            raise ValueError(
                f"config.head_dim={config.head_dim} differs from hidden_size / "
                f"num_attention_heads = {attn.head_dim}; not supported"
            )
        attn.load_state_dict(
            {
                f"{n}.weight": getattr(llama_attention, n).weight.detach().clone()
                for n in ("q_proj", "k_proj", "v_proj", "o_proj")
            }
        )
        return attn.to(llama_attention.q_proj.weight.dtype)
