"""The course GPT: a real ``transformers`` Llama model at small sizes, and its arithmetic.

We do not write our own model class: a ``LlamaForCausalLM`` built from a ``LlamaConfig`` is the
same architecture as Llama 3 / SmolLM2 (RMSNorm, RoPE, SwiGLU MLP, causal self-attention), so
everything a learner does with it (``save_pretrained``, ``generate``, quantization, profiling)
transfers to real open models. This module only holds

- ``PRESETS``: named sizes ("tiny" for tests, "small" for the lessons, "gpt2-124m" for GPUs),
- ``make_config`` / ``build_model``: a seeded model from a preset,
- ``count_parameters`` and ``flops_per_token``: the numbers behind compute budgets and MFU.

Example
-------
>>> config = make_config("tiny")
>>> model = build_model(config, seed=0)
>>> count_parameters(model) == count_parameters(model, exclude_embeddings=True) + 256 * 32
True
"""

from __future__ import annotations

import copy

import torch

__all__ = [
    "PRESETS",
    "make_config",
    "build_model",
    "count_parameters",
    "non_embedding_parameters",
    "flops_per_token",
    "split_lm_head",
    "target_logprobs",
]

# LlamaConfig keyword arguments. max_position_embeddings doubles as the training block size
# (context length): RoPE has no learned positions, but the lessons train at this length.
# intermediate_size ~ 8/3 * hidden_size: SwiGLU has three matrices, so this matches the
# parameter count of a GPT-2 MLP with 4 * hidden_size.
PRESETS: dict[str, dict] = {
    # ~50k parameters: unit tests and lab checks, trains for a few steps in well under a second.
    "tiny": dict(
        hidden_size=32,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    ),
    # ~1.0M parameters: the lessons' Shakespeare GPT, trained on a laptop CPU in ~5 minutes.
    "small": dict(
        hidden_size=144,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
    ),
    # GPT-2 small's shape (12 x 768, 12 heads, 1024 context): ~85M non-embedding parameters.
    # Pass vocab_size=50257 (GPT-2's BPE) for the full 124M; GPU benchmark scale only.
    "gpt2-124m": dict(
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        max_position_embeddings=1024,
    ),
}

# Shared by every preset: a byte-level vocabulary has no special tokens, so no bos/eos/pad ids;
# tied input/output embeddings (as GPT-2 and SmolLM2 do) save vocab_size * hidden_size weights.
_COMMON = dict(
    tie_word_embeddings=True,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
    attention_dropout=0.0,
    initializer_range=0.02,
    rms_norm_eps=1e-5,
)


def make_config(preset: str = "small", vocab_size: int = 256, **overrides):
    """A ``transformers.LlamaConfig`` for a named preset.

    Parameters
    ----------
    preset : str
        One of ``PRESETS`` ("tiny", "small", "gpt2-124m").
    vocab_size : int
        Number of token ids. 256 = the course's byte-level tokenizer.
    **overrides
        Any ``LlamaConfig`` keyword (e.g. ``num_hidden_layers=2``, ``max_position_embeddings=256``).

    Returns
    -------
    transformers.LlamaConfig

    Examples
    --------
    >>> make_config("tiny", num_hidden_layers=1).num_hidden_layers
    1
    """
    from transformers import LlamaConfig

    if not isinstance(preset, str):
        raise TypeError(f"preset must be a str naming one of {sorted(PRESETS)}, got {type(preset).__name__}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    kwargs = {**_COMMON, **copy.deepcopy(PRESETS[preset]), "vocab_size": vocab_size, **overrides}
    hidden, heads = kwargs["hidden_size"], kwargs["num_attention_heads"]
    if kwargs.get("head_dim") is None and hidden % heads:
        raise ValueError(
            f"hidden_size ({hidden}) must be divisible by num_attention_heads ({heads}) "
            "unless head_dim is given"
        )
    head_dim = kwargs.get("head_dim") or hidden // heads
    if head_dim % 2:
        raise ValueError(
            f"hidden_size / num_attention_heads = {head_dim} must be even (RoPE rotates pairs "
            f"of dimensions); got hidden_size={hidden}, num_attention_heads={heads}"
        )
    kv = kwargs.get("num_key_value_heads") or heads
    if heads % kv:
        raise ValueError(f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv})")
    return LlamaConfig(**kwargs)


def build_model(config, seed: int = 0, attn_implementation: str = "sdpa"):
    """A freshly initialised ``transformers.LlamaForCausalLM``, identical for the same ``seed``.

    The global torch RNG is left untouched (initialisation runs on a forked RNG).

    Parameters
    ----------
    config : transformers.LlamaConfig
        E.g. from :func:`make_config`.
    seed : int
        Seed of the weight initialisation.
    attn_implementation : str
        "sdpa" (fused ``scaled_dot_product_attention``, default) or "eager" (plain matmuls; needed
        for ``output_attentions=True``).

    Returns
    -------
    transformers.LlamaForCausalLM in training mode, float32, on the CPU.

    Examples
    --------
    >>> a, b = build_model(make_config("tiny"), seed=1), build_model(make_config("tiny"), seed=1)
    >>> bool(torch.equal(a.lm_head.weight, b.lm_head.weight))
    True
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if not isinstance(config, LlamaConfig):
        raise TypeError(
            f"config must be a transformers.LlamaConfig (see make_config), got {type(config).__name__}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {attn_implementation!r}")
    config = copy.deepcopy(config)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.train()


def count_parameters(model: torch.nn.Module, exclude_embeddings: bool = False) -> int:
    """Number of distinct trainable-or-not parameters (tied weights counted once).

    Parameters
    ----------
    model : torch.nn.Module
    exclude_embeddings : bool
        Leave out the token embedding and the output projection (``lm_head``), i.e. the weights
        whose size grows with the vocabulary: the "N" of scaling laws (Kaplan et al. 2020).

    Returns
    -------
    int

    Examples
    --------
    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    skip = set()
    if exclude_embeddings:
        for get in ("get_input_embeddings", "get_output_embeddings"):
            module = getattr(model, get, lambda: None)()
            if module is not None:
                skip.update(id(p) for p in module.parameters())
    seen, total = set(), 0
    for p in model.parameters():  # .parameters() already yields a tied tensor once
        if id(p) in seen or id(p) in skip:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def non_embedding_parameters(config) -> int:
    """N (non-embedding parameter count) of a Llama config, computed without building the model.

    Per layer: q and o projections (hidden x heads*head_dim), k and v (hidden x kv_heads*head_dim),
    SwiGLU's three matrices (hidden x intermediate), two RMSNorm scales; plus the final norm.
    Equals ``count_parameters(build_model(config), exclude_embeddings=True)``.
    """
    d, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv = config.num_key_value_heads or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    attn = 2 * d * heads * head_dim + 2 * d * kv * head_dim
    if getattr(config, "attention_bias", False):
        attn += heads * head_dim + 2 * kv * head_dim + d  # q, k, v biases and o's (d outputs)
    mlp = 3 * d * inter + (2 * inter + d if getattr(config, "mlp_bias", False) else 0)
    return layers * (attn + mlp + 2 * d) + d


def flops_per_token(config, seq_len: int | None = None, training: bool = True) -> float:
    """Model FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B).

    Training: ``6 N + 12 L H Q T`` with N the non-embedding parameters, L layers, H heads, Q head
    dimension and T the sequence length (the second term is attention's QK^T and AV matmuls,
    which have no parameters). 6 = 2 FLOPs per multiply-add x (1 forward + 2 backward).
    Forward only (inference): one third of that, ``2 N + 4 L H Q T``. The output projection onto
    the vocabulary is not counted (it is part of the embeddings), as in PaLM's MFU.

    Parameters
    ----------
    config : transformers.LlamaConfig (or any object with the Llama config attributes)
    seq_len : int or None
        T, the context length the model runs at (tokens); ``None`` uses the config's
        ``max_position_embeddings``.
    training : bool
        True: forward + backward; False: forward only.

    Returns
    -------
    float, FLOPs per token. Multiply by tokens/s to get FLOP/s (and divide by peak for MFU).

    Examples
    --------
    >>> cfg = make_config("tiny")
    >>> flops_per_token(cfg, 64) == 3 * flops_per_token(cfg, 64, training=False)
    True
    >>> flops_per_token(cfg) == flops_per_token(cfg, cfg.max_position_embeddings)
    True
    """
    for attr in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not hasattr(config, attr):
            raise TypeError(
                f"config must be a LlamaConfig-like object with {attr!r}, got {type(config).__name__}"
            )
    if not isinstance(training, bool):
        raise TypeError(f"training must be True or False, got {training!r}")
    if seq_len is None:
        seq_len = getattr(config, "max_position_embeddings", None)
        if seq_len is None:
            raise TypeError(
                f"config must have max_position_embeddings (or pass seq_len=...), got {type(config).__name__}"
            )
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int (tokens), got {seq_len!r}")
    n = non_embedding_parameters(config)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    train_flops = 6 * n + 12 * config.num_hidden_layers * heads * head_dim * seq_len
    return float(train_flops if training else train_flops / 3)


def split_lm_head(model):
    """``(body, head)`` of a causal LM: ``body(input_ids=, attention_mask=).last_hidden_state`` is
    (B, T, hidden) and ``head(h)`` maps hidden states to vocabulary logits; ``(None, None)`` when
    the model does not expose them (then call the model itself for ``.logits``).

    Scoring only some positions (a multiple-choice answer, the targets of one chunk) through the
    head keeps memory at batch x length x hidden instead of x vocabulary (49,152 for SmolLM2).
    Works for transformers ``*ForCausalLM`` models and peft models wrapping them.

    >>> body, head = split_lm_head(build_model(make_config("tiny", vocab_size=256)))
    >>> type(body).__name__, tuple(head.weight.shape)
    ('LlamaModel', (256, 32))
    """
    m = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = m.get_output_embeddings() if hasattr(m, "get_output_embeddings") else None
    body = getattr(m, getattr(m, "base_model_prefix", ""), None)
    if head is None or body is None or body is m:
        return None, None
    return body, head


def target_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = 256):
    """Log-probability of each target token, and whether it is the argmax, from hidden states.

    ``hidden`` (N, H) are the states whose logits predict ``targets`` (N,) (for a causal LM, the
    state at position t predicts token t + 1). Logits are made ``chunk`` rows at a time, so the
    peak is chunk x vocabulary floats, never N x vocabulary.

    Returns ``(logp, is_argmax)``: float32 (N,) in nats and bool (N,).

    >>> head = torch.nn.Linear(4, 3, bias=False)
    >>> lp, top = target_logprobs(head, torch.zeros(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    >>> [round(v, 4) for v in lp.tolist()]
    [-1.0986, -1.0986, -1.0986, -1.0986, -1.0986]
    """
    logp = torch.empty(len(targets), dtype=torch.float32)
    top = torch.empty(len(targets), dtype=torch.bool)
    for s in range(0, len(targets), chunk):
        lp = torch.log_softmax(head(hidden[s : s + chunk]).float(), dim=-1)
        t = targets[s : s + chunk]
        logp[s : s + chunk] = lp.gather(1, t[:, None]).squeeze(1)
        top[s : s + chunk] = lp.argmax(-1) == t
    return logp, top
