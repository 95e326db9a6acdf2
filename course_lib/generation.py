"""Sampling text from a causal language model, one token at a time.

A language model gives, at each step, logits over the vocabulary for the next token. How we turn
those into a choice decides what the text looks like:

- temperature ``tau``: divide the logits by ``tau`` before the softmax. ``tau -> 0`` is greedy
  (always the most likely token); ``tau = 1`` samples the model's own distribution; ``tau > 1``
  flattens it (more surprising, more errors).
- top-k: keep only the ``k`` most likely tokens (cuts the long tail of unlikely tokens).
- top-p (nucleus): keep the smallest set of most likely tokens whose probabilities add up to ``p``
  (a tail cut that adapts to how confident the model is).

These are the same knobs as ``model.generate(do_sample=True, temperature=..., top_k=...,
top_p=...)`` in transformers; ``generate`` below is the loop written out, with a KV cache.

Example
-------
>>> import torch
>>> logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
>>> top_k_filter(logits, 2).isinf().tolist()
[[False, False, True, True]]
"""

from __future__ import annotations

import torch

__all__ = [
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_next_token",
    "generate",
    "generate_text",
]


def _check_logits(logits) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise TypeError(
            f"logits must be a floating-point torch.Tensor, got {type(logits).__name__}"
            + (f" of dtype {logits.dtype}" if isinstance(logits, torch.Tensor) else "")
        )
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (batch, vocab), got {tuple(logits.shape)}")
    return logits


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature`` (temperature > 0). Shape (B, V) -> (B, V)."""
    _check_logits(logits)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 here (use greedy decoding for 0), got {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Set all but the ``k`` largest logits of each row to -inf (ties at the k-th value are kept).

    ``k=None`` or ``k >= vocab`` returns the logits unchanged. Shape (B, V) -> (B, V).
    """
    _check_logits(logits)
    if k is None or k >= logits.size(-1):
        return logits
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive int or None, got {k!r}")
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus filtering: keep the most likely tokens until their probability mass reaches ``p``.

    The most likely token is always kept. ``p=None`` or ``p >= 1`` returns the logits unchanged.
    Shape (B, V) -> (B, V).
    """
    _check_logits(logits)
    if p is None or p >= 1:
        return logits
    if not 0 < p:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    # drop a token when the mass *before* it already reaches p (so the token crossing p stays)
    drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the next token id for each row of ``logits`` (B, V); returns a LongTensor (B,).

    ``temperature == 0`` means greedy (argmax); otherwise temperature, then top-k, then top-p,
    then one draw from the softmax (``generator`` makes it reproducible).
    """
    _check_logits(logits)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = top_p_filter(top_k_filter(apply_temperature(logits.float(), temperature), top_k), top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Autoregressive sampling from a transformers causal LM.

    Parameters
    ----------
    model : transformers causal LM, ``model(input_ids=..., cache=..., use_cache=...)`` -> ``.logits``, ``.cache``.
    input_ids : LongTensor (B, T0) or (T0,), the prompt (at least one token).
    max_new_tokens : int, tokens to append.
    temperature, top_k, top_p : see :func:`sample_next_token` (temperature 0 = greedy).
    seed : int or None, seed of a private ``torch.Generator`` (None: the global RNG).
    use_cache : bool, reuse past keys/values (KV cache) so each step processes one new token.
        When the sequence would outgrow ``max_position_embeddings``, the context is cropped to the
        last ``max_position_embeddings`` tokens and recomputed without cache (nanoGPT's way).

    Returns
    -------
    LongTensor (B, T0 + max_new_tokens) (or 1-D if ``input_ids`` was 1-D): prompt + continuation.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype.is_floating_point:
        raise TypeError(
            f"input_ids must be an integer torch.Tensor of token ids, got {type(input_ids).__name__}"
        )
    squeeze = input_ids.dim() == 1
    ids = input_ids[None] if squeeze else input_ids
    if ids.dim() != 2 or ids.size(1) < 1:
        raise ValueError(
            f"input_ids must have shape (T,) or (B, T) with T >= 1, got {tuple(input_ids.shape)}"
        )
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    device = next(model.parameters()).device
    ids = ids.long().to(device)
    max_len = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 10**9
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    was_training = model.training
    model.eval()
    past, pending = None, ids[:, -max_len:]
    for _ in range(max_new_tokens):
        if past is not None and past.get_seq_length() + 1 > max_len:
            past, pending = None, ids[:, -max_len:]  # the window is full: crop and recompute
        out = model(input_ids=pending, cache=past, use_cache=use_cache)  # transformers >= 5.2x: `cache`
        past = out.cache if use_cache else None
        nxt = sample_next_token(out.logits[:, -1, :], temperature, top_k, top_p, generator)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        pending = nxt[:, None] if use_cache else ids[:, -max_len:]
    model.train(was_training)
    return ids[0] if squeeze else ids


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 200, **kwargs) -> str:
    """Prompt in, prompt + continuation out, for any tokenizer with ``encode`` / ``decode``
    (e.g. :class:`course_lib.training.ByteTokenizer`). ``kwargs`` go to :func:`generate`."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
    ids = torch.as_tensor(tokenizer.encode(prompt)).long()
    return tokenizer.decode(generate(model, ids, max_new_tokens, **kwargs))
