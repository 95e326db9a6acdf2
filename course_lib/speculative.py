"""Greedy speculative decoding: a cheap draft model proposes, the target model verifies.

The draft proposes ``k`` tokens one by one; the target scores all of them in **one** forward pass
and keeps the longest prefix it agrees with, plus one token of its own. The output is exactly the
target's greedy output (Leviathan et al. 2023; Chen et al. 2023); the speed-up depends on how
often the draft is right (the acceptance rate) and on how much cheaper one verification pass of
k + 1 tokens is than k + 1 decode steps, which holds when decoding is memory-bound (one GPU
request) and much less on a CPU whose matmuls are compute-bound.

Two drafts that cost no memory:

- :func:`early_exit_draft`: the target's own first layers and its output head (the "early exit"
  draft of LayerSkip, Elhoushi et al. 2024, which *trains* the model for it; untrained, as
  here, it is a weak proposer);
- :func:`prompt_lookup_proposer`: no model at all; it copies what followed the last earlier
  occurrence of the final n-gram (prompt lookup decoding, Saxena 2023; ``generate(...,
  prompt_lookup_num_tokens=k)`` in transformers, the "ngram" speculator in vLLM). Strong when
  the answer repeats the prompt (editing, extraction, summaries), useless otherwise.

Example
-------
>>> import torch
>>> from course_lib.model import build_model, make_config
>>> target = build_model(make_config("tiny"), seed=0).eval()
>>> draft = early_exit_draft(target, n_layers=1)
>>> ids, stats = speculative_generate(target, draft, list(b"To be"), max_new_tokens=8, k=3)
>>> ids == target.generate(torch.tensor([list(b"To be")]), max_new_tokens=8, do_sample=False)[0, 5:].tolist()
True
>>> 0 <= stats["acceptance_rate"] <= 1 and stats["target_calls"] <= 8
True
"""

from __future__ import annotations

import copy

import torch

from ._validation import check_int

__all__ = ["early_exit_draft", "prompt_lookup_proposer", "speculative_generate"]


def early_exit_draft(model, n_layers: int):
    """A copy of a Llama-family ``model`` that runs only its first ``n_layers`` decoder layers and
    then its own final norm and output head. The weights are shared, not copied (no memory)."""
    layers = model.model.layers
    check_int("n_layers", n_layers, minimum=1, maximum=len(layers))
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = n_layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:n_layers]
    inner = copy.copy(model.model)
    inner._modules = dict(inner._modules)
    inner.layers = torch.nn.ModuleList(list(layers)[:n_layers])
    inner.config = config
    draft = copy.copy(model)
    draft._modules = dict(draft._modules)
    draft.model, draft.config = inner, config
    return draft


def prompt_lookup_proposer(ngram: int = 3):
    """A draft without a model: ``propose(ids, k)`` returns the (up to) ``k`` tokens that followed
    the most recent earlier occurrence of the last ``ngram`` tokens of ``ids`` (or of a shorter
    suffix, down to one token), or [] when there is none.

    >>> propose = prompt_lookup_proposer(ngram=2)
    >>> propose([5, 6, 7, 8, 9, 5, 6], k=3)
    [7, 8, 9]
    >>> propose([1, 2, 3], k=3)
    []
    """
    check_int("ngram", ngram, minimum=1)

    def propose(ids, k):
        for n in range(min(ngram, len(ids) - 1), 0, -1):
            tail = ids[-n:]
            for start in range(len(ids) - n - 1, -1, -1):
                if ids[start : start + n] == tail:
                    return list(ids[start + n : start + n + k])
        return []

    return propose


def _crop(cache, length: int) -> None:
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[:, :, :length], layer.values[:, :, :length]


@torch.no_grad()
def speculative_generate(target, draft, prompt_ids, max_new_tokens: int, k: int = 4, eos_ids=()):
    """Greedy decoding of ``target`` with proposals from ``draft`` (same vocabulary).

    Parameters
    ----------
    target : transformers causal LM (eval mode).
    draft : a causal LM with the same vocabulary, or a function ``propose(ids, k) -> list`` of
        at most k proposed ids (e.g. :func:`prompt_lookup_proposer`).
    prompt_ids : list of int, at least one token.
    max_new_tokens : int >= 1.
    k : int >= 1, tokens the draft proposes per verification.
    eos_ids : iterable of int, generation stops after the first of these (as ``generate`` does).

    Returns
    -------
    (new_ids, stats): ``new_ids`` the generated ids (``max_new_tokens`` of them, fewer when an
    EOS came first) (identical to
    ``target.generate(..., do_sample=False)`` up to float rounding); ``stats`` with
    ``proposed``, ``accepted``, ``acceptance_rate``, ``target_calls`` (forward passes of the
    target, the prompt's included) and ``tokens_per_target_call``.
    """
    check_int("max_new_tokens", max_new_tokens, minimum=1)
    check_int("k", k, minimum=1)
    ids = [int(i) for i in prompt_ids]
    if not ids:
        raise ValueError("prompt_ids is empty: give at least one token")
    n_prompt, eos = len(ids), {int(i) for i in eos_ids}
    out = target(input_ids=torch.tensor([ids]), use_cache=True)
    tcache, t_len = out.cache, len(ids)  # tcache holds ids[:t_len]
    ids.append(int(out.logits[0, -1].argmax()))
    t_len = len(ids) - 1
    dcache, d_len = None, 0
    proposed = accepted = 0
    calls = 1
    while len(ids) - n_prompt < max_new_tokens:
        kk = min(k, max_new_tokens - (len(ids) - n_prompt))
        seq = list(ids)
        if isinstance(draft, torch.nn.Module):
            for _ in range(kk):  # the draft model proposes kk tokens, one forward pass each
                o = draft(input_ids=torch.tensor([seq[d_len:]]), cache=dcache, use_cache=True)
                dcache, d_len = o.cache, len(seq)
                seq.append(int(o.logits[0, -1].argmax()))
        else:
            seq += [int(i) for i in draft(seq, kk)][:kk]
        proposal = seq[len(ids) :]
        kk = len(proposal)
        o = target(input_ids=torch.tensor([seq[t_len:]]), cache=tcache, use_cache=True)  # one pass
        tcache, calls = o.cache, calls + 1
        preds = o.logits[0].argmax(dim=-1).tolist()  # preds[i]: the target's token after seq[: t_len + i + 1]
        n_ok = 0
        while n_ok < kk and proposal[n_ok] == preds[n_ok]:
            n_ok += 1
        proposed, accepted = proposed + kk, accepted + n_ok
        keep = len(ids) + n_ok  # tokens whose keys are right in both caches: ids + accepted drafts
        ids = seq[:keep] + [preds[n_ok]]
        _crop(tcache, keep)
        t_len = keep
        if dcache is not None:
            d_len = min(d_len, keep)
            _crop(dcache, d_len)
        if eos & set(ids[n_prompt:]):
            break
    new = ids[n_prompt : n_prompt + max_new_tokens]
    for i, t in enumerate(new):
        if t in eos:
            new = new[: i + 1]
            break
    stats = {
        "proposed": proposed,
        "accepted": accepted,
        "acceptance_rate": accepted / proposed if proposed else float("nan"),
        "target_calls": calls,
        "tokens_per_target_call": len(new) / calls,
    }
    return new, stats
