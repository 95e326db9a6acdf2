"""Explaining a model's output with Shapley values, and checking that the explanation is faithful.

The objects here are *games*: a ``value_fn`` takes a boolean matrix ``masks`` of shape (M, n)
(row m says which of the n players, e.g. tokens, are present) and returns the model's score for
each of the M coalitions, shape (M,). Every explainer below (exact Shapley, deletion and
insertion curves, ERASER metrics) works on any game, so the same code explains a toy AND
function, the fine-tuned sentiment classifier and a causal LM's next-token preference.

* ``log_odds``, ``ClassifierLogOdds``, ``ContrastiveNextToken``: scores on an additive scale
  (log-odds, log-probability differences), where Shapley values add up meaningfully;
* ``token_game``: the game of a tokenized text, absent tokens replaced by a mask token
  (as ``shap.maskers.Text`` does);
* ``exact_shapley``: Shapley values by enumerating all 2**n coalitions (n <= 16);
* ``deletion_curve``, ``insertion_curve``, ``aopc``, ``comprehensiveness``, ``sufficiency``:
  faithfulness (does removing what the explanation calls important change the output?);
* ``gradient_x_input``, ``integrated_gradients``, ``attention_to_cls``: other attributions to
  compare against.

Example
-------
>>> import numpy as np
>>> v = lambda masks: masks.astype(float) @ np.array([1.0, 2.0, 0.0])   # an additive game
>>> phi, base = exact_shapley(v, 3)
>>> phi.tolist(), float(base)
([1.0, 2.0, 0.0], 0.0)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "log_odds",
    "ClassifierLogOdds",
    "ContrastiveNextToken",
    "token_game",
    "all_coalitions",
    "exact_shapley",
    "deletion_curve",
    "insertion_curve",
    "aopc",
    "comprehensiveness",
    "sufficiency",
    "gradient_x_input",
    "integrated_gradients",
    "attention_to_cls",
    "MAX_EXACT_PLAYERS",
]

MAX_EXACT_PLAYERS = 16  # 2**16 = 65,536 model evaluations: about the most a CPU can afford


def log_odds(p, eps: float = 1e-7) -> np.ndarray:
    """log(p / (1 - p)), elementwise, with p clipped to [eps, 1 - eps] so 0 and 1 stay finite."""
    p = np.asarray(p, dtype=np.float64)
    if np.any((p < 0) | (p > 1)) or np.any(~np.isfinite(p)):
        raise ValueError("p must hold probabilities in [0, 1]; did you pass logits?")
    p = np.clip(p, eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def _as_text_list(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = [str(t) for t in np.asarray(texts, dtype=object).reshape(-1)]
    if not texts:
        raise ValueError("texts is empty; pass at least one string")
    return texts


class ClassifierLogOdds:
    """A text classifier as a function ``texts -> log-odds of one class``, shape (N,).

    For a softmax classifier the log-odds of class ``target`` is
    ``logit[target] - logsumexp(other logits)`` (for two classes: ``logit1 - logit0``). On this
    scale the contributions of separate pieces of evidence add up, which is what Shapley values
    assume; on the probability scale they saturate near 0 and 1.

    Works as the model function of ``shap.Explainer(f, shap.maskers.Text(tokenizer))``.
    """

    def __init__(self, model, tokenizer, target: int = 1, max_length: int = 64, batch_size: int = 64):
        n = model.config.num_labels
        if not isinstance(target, int) or not 0 <= target < n:
            raise ValueError(f"target must be a class id in [0, {n}), got {target!r}")
        self.model, self.tokenizer, self.target = model.eval(), tokenizer, target
        self.max_length, self.batch_size = max_length, batch_size
        self.calls = 0  # texts scored so far: the cost of an explanation

    def logits_to_log_odds(self, logits):
        import torch

        logits = torch.as_tensor(logits, dtype=torch.float64)
        others = torch.cat([logits[:, : self.target], logits[:, self.target + 1 :]], dim=1)
        return (logits[:, self.target] - torch.logsumexp(others, dim=1)).numpy()

    def __call__(self, texts) -> np.ndarray:
        import torch

        texts = _as_text_list(texts)
        self.calls += len(texts)
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[i : i + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                out.append(self.logits_to_log_odds(self.model(**enc).logits))
        return np.concatenate(out)


class ContrastiveNextToken:
    """A causal LM as a function ``prompts -> log p(word_a | prompt) - log p(word_b | prompt)``.

    Explaining this difference (rather than p(word_a) alone) asks *which prompt tokens make the
    model prefer a over b*, e.g. " he" over " she". Each word must be a single token of the
    model's tokenizer (with its leading space). Prompts are left-padded so the next token is
    always predicted at the last position.
    """

    def __init__(self, model, tokenizer, word_a: str, word_b: str, batch_size: int = 32):
        ids_a = tokenizer.encode(word_a, add_special_tokens=False)
        ids_b = tokenizer.encode(word_b, add_special_tokens=False)
        for w, ids in ((word_a, ids_a), (word_b, ids_b)):
            if len(ids) != 1:
                raise ValueError(
                    f"{w!r} is {len(ids)} tokens for this tokenizer; pass words that "
                    f"are one token each (often with a leading space, e.g. ' he')"
                )
        self.model, self.tokenizer = model.eval(), tokenizer
        self.id_a, self.id_b, self.batch_size = ids_a[0], ids_b[0], batch_size
        self.calls = 0

    def __call__(self, prompts) -> np.ndarray:
        import torch

        prompts = _as_text_list(prompts)
        self.calls += len(prompts)
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = []
        with torch.no_grad():
            for i in range(0, len(prompts), self.batch_size):
                rows = [
                    tok.encode(p, add_special_tokens=False) or [pad] for p in prompts[i : i + self.batch_size]
                ]
                T = max(map(len, rows))
                ids = torch.full((len(rows), T), pad, dtype=torch.long)
                att = torch.zeros((len(rows), T), dtype=torch.long)
                for r, row in enumerate(rows):  # left padding: the last position is real
                    ids[r, T - len(row) :] = torch.as_tensor(row)
                    att[r, T - len(row) :] = 1
                pos = (att.cumsum(1) - 1).clamp(min=0)
                logp = torch.log_softmax(
                    self.model(input_ids=ids, attention_mask=att, position_ids=pos).logits[:, -1].double(),
                    dim=-1,
                )
                out.append((logp[:, self.id_a] - logp[:, self.id_b]).numpy())
        return np.concatenate(out)


def _check_masks(masks, n_players: int) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 2 or masks.shape[1] != n_players:
        raise ValueError(f"masks must have shape (M, {n_players}), got {masks.shape}")
    return masks.astype(bool)


def token_game(model, tokenizer, text: str, target: int = 1, max_length: int = 64):
    """The game "which word-piece tokens of ``text`` are present" for a sequence classifier.

    Players are the text's tokens without [CLS]/[SEP]; an absent token is replaced by the
    tokenizer's mask token, which is the baseline ``shap.maskers.Text`` uses for BERT-style
    models (it keeps the length, so positions do not shift).

    Returns
    -------
    tokens : list of str, the n players
    value_fn : callable, masks (M, n) bool -> log-odds of class ``target``, shape (M,)
    """
    import torch

    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    if tokenizer.mask_token_id is None:
        raise ValueError("this tokenizer has no mask token; use a text-level game instead")
    enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    ids = enc["input_ids"][0]
    special = torch.as_tensor(
        tokenizer.get_special_tokens_mask(ids.tolist(), already_has_special_tokens=True), dtype=torch.bool
    )
    player_pos = torch.nonzero(~special).squeeze(1)
    tokens = tokenizer.convert_ids_to_tokens(ids[player_pos].tolist())
    wrapper = ClassifierLogOdds(model, tokenizer, target=target, max_length=max_length)
    n = len(tokens)

    def value_fn(masks, batch_size: int = 128) -> np.ndarray:
        masks = torch.as_tensor(_check_masks(masks, n))
        out = []
        with torch.no_grad():
            for i in range(0, len(masks), batch_size):
                m = masks[i : i + batch_size]
                batch = ids.repeat(len(m), 1)
                cols = batch[:, player_pos]
                batch[:, player_pos] = torch.where(m, cols, tokenizer.mask_token_id)
                wrapper.calls += len(m)
                out.append(
                    wrapper.logits_to_log_odds(
                        model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits
                    )
                )
        return np.concatenate(out)

    value_fn.calls = lambda: wrapper.calls
    return tokens, value_fn


def all_coalitions(n_players: int) -> np.ndarray:
    """Every subset of n players as a boolean matrix (2**n, n); row i is the binary digits of i."""
    if not isinstance(n_players, int) or n_players < 1:
        raise ValueError(f"n_players must be an int >= 1, got {n_players!r}")
    if n_players > MAX_EXACT_PLAYERS:
        raise ValueError(
            f"n_players={n_players} means 2**{n_players} = {2**n_players:,} model "
            f"calls; exact enumeration is limited to {MAX_EXACT_PLAYERS} players. "
            "Use shap's sampling explainers for longer inputs."
        )
    return ((np.arange(2**n_players)[:, None] >> np.arange(n_players)) & 1).astype(bool)


def exact_shapley(value_fn, n_players: int):
    """Exact Shapley values of a game by evaluating all 2**n coalitions once.

    phi_i = sum over S not containing i of  |S|! (n - |S| - 1)! / n!  * (v(S + i) - v(S))

    Parameters
    ----------
    value_fn : callable, masks (M, n) bool -> values (M,)
    n_players : int, 1 <= n <= 16

    Returns
    -------
    phi : np.ndarray (n,) float64, one value per player
    base_value : float, v(empty set). Efficiency: ``phi.sum() + base_value == v(all players)``.
    """
    masks = all_coalitions(n_players)
    v = np.asarray(value_fn(masks), dtype=np.float64).reshape(-1)
    if v.shape != (len(masks),):
        raise ValueError(f"value_fn returned {v.size} values for {len(masks)} coalitions")
    sizes = masks.sum(1)
    fact = [math.factorial(k) for k in range(n_players + 1)]
    weight = np.array(
        [fact[s] * fact[n_players - s - 1] / fact[n_players] if s < n_players else 0.0 for s in sizes]
    )
    index = np.arange(len(masks))
    phi = np.zeros(n_players)
    for i in range(n_players):
        without = ~masks[:, i]  # coalitions S that do not contain i
        phi[i] = np.sum(weight[without] * (v[index[without] | (1 << i)] - v[without]))
    return phi, float(v[0])


def _order_from_scores(scores, n_players):
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape != (n_players,):
        raise ValueError(f"scores must have one value per player ({n_players}), got {scores.shape}")
    return np.argsort(-scores, kind="stable")


def _perturbation_curve(value_fn, scores, n_players, remove: bool) -> np.ndarray:
    """v at each step of removing (``remove``) or adding the players, best-scored first (n + 1,)."""
    n = len(np.asarray(scores).reshape(-1)) if n_players is None else n_players
    order = _order_from_scores(scores, n)
    masks = np.full((n + 1, n), remove, dtype=bool)
    for k in range(1, n + 1):
        masks[k:, order[k - 1]] = not remove
    return np.asarray(value_fn(masks), dtype=np.float64).reshape(-1)


def deletion_curve(value_fn, scores, n_players: int | None = None) -> np.ndarray:
    """Model score as the players are removed, most important (highest score) first.

    Returns an array (n + 1,): entry k is v(all players minus the top-k). A faithful
    explanation makes it fall fast (for the explained class); a random order falls slowly.
    """
    return _perturbation_curve(value_fn, scores, n_players, remove=True)


def insertion_curve(value_fn, scores, n_players: int | None = None) -> np.ndarray:
    """Model score as players are added to the empty input, most important first (n + 1,)."""
    return _perturbation_curve(value_fn, scores, n_players, remove=False)


def aopc(curve) -> float:
    """Area over the perturbation curve (Samek et al. 2017): mean of v(x) - v(x without top-k)
    over k = 0..n. Larger = removing the top-ranked players hurts more = more faithful."""
    curve = np.asarray(curve, dtype=np.float64).reshape(-1)
    if len(curve) < 2:
        raise ValueError(f"curve needs at least 2 points, got {len(curve)}")
    return float(np.mean(curve[0] - curve))


def _top_k_masks(scores, fractions):
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    tops = []
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"fractions must be in (0, 1], got {f!r}")
        top = np.zeros(n, dtype=bool)
        top[order[: max(1, math.ceil(f * n))]] = True
        tops.append(top)
    return np.array(tops)


def comprehensiveness(value_fn, scores, fractions=(0.1, 0.2, 0.5)) -> float:
    """ERASER comprehensiveness (DeYoung et al. 2020): v(x) - v(x without the top-k% rationale),
    averaged over ``fractions`` (ERASER's AOPC uses the bins 1/5/10/20/50%; the default
    ``(0.1, 0.2, 0.5)`` is the course's shorter choice). High = the rationale was needed."""
    tops = _top_k_masks(scores, fractions)
    full = np.ones((1, tops.shape[1]), dtype=bool)
    v = np.asarray(value_fn(np.vstack([full, ~tops])), dtype=np.float64)
    return float(np.mean(v[0] - v[1:]))


def sufficiency(value_fn, scores, fractions=(0.1, 0.2, 0.5)) -> float:
    """ERASER sufficiency: v(x) - v(top-k% rationale only), averaged over ``fractions`` (see
    :func:`comprehensiveness` for the bins).
    Low (near 0 or negative) = the rationale alone is enough."""
    tops = _top_k_masks(scores, fractions)
    full = np.ones((1, tops.shape[1]), dtype=bool)
    v = np.asarray(value_fn(np.vstack([full, tops])), dtype=np.float64)
    return float(np.mean(v[0] - v[1:]))


def _player_positions(tokenizer, ids):
    import torch

    special = torch.as_tensor(
        tokenizer.get_special_tokens_mask(ids.tolist(), already_has_special_tokens=True), dtype=torch.bool
    )
    return torch.nonzero(~special).squeeze(1)


def _log_odds_from_embeds(model, embeds, attention_mask, target):
    import torch

    logits = model(inputs_embeds=embeds, attention_mask=attention_mask).logits
    others = torch.cat([logits[:, :target], logits[:, target + 1 :]], dim=1)
    return logits[:, target] - torch.logsumexp(others, dim=1)


def gradient_x_input(model, tokenizer, text: str, target: int = 1, max_length: int = 64):
    """Gradient x input attribution of the log-odds, per word-piece token (no [CLS]/[SEP]).

    The gradient of the log-odds with respect to each token's input embedding, dotted with
    (embedding - mask-token embedding), i.e. a one-step linear estimate of what masking that
    token would change. Returns (tokens, scores (n,)).
    """
    return integrated_gradients(model, tokenizer, text, target, steps=1, max_length=max_length)


def integrated_gradients(model, tokenizer, text: str, target: int = 1, steps: int = 32, max_length: int = 64):
    """Integrated Gradients (Sundararajan et al. 2017) of the log-odds, per word-piece token.

    Baseline: every player token replaced by the mask token (the same baseline as the
    Shapley game), [CLS]/[SEP] unchanged. Attributions sum (up to the Riemann error, shrinking
    with ``steps``) to f(x) - f(baseline). ``steps=1`` evaluates the gradient at the input only:
    gradient x (input - baseline).

    Returns
    -------
    tokens : list of str (n,)
    scores : np.ndarray (n,) float64, in log-odds units
    """
    import torch

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    ids = enc["input_ids"][0]
    pos = _player_positions(tokenizer, ids)
    emb_layer = model.get_input_embeddings()
    with torch.no_grad():
        x = emb_layer(ids)[None]  # (1, T, H)
        base = x.clone()
        base[0, pos] = emb_layer.weight[tokenizer.mask_token_id]
    # steps=1 is plain gradient x input: the gradient taken at the input itself.
    alphas = torch.ones(1) if steps == 1 else (torch.arange(steps) + 0.5) / steps  # midpoint rule
    path = (base + alphas[:, None, None] * (x - base)).requires_grad_(True)  # (S, T, H)
    att = torch.ones(path.shape[:2], dtype=torch.long)
    was_training = model.training
    model.eval()
    out = _log_odds_from_embeds(model, path, att, target).sum()
    (grad,) = torch.autograd.grad(out, path)
    model.train(was_training)
    attr = ((x - base)[0] * grad.mean(0)).sum(-1)  # (T,)
    tokens = tokenizer.convert_ids_to_tokens(ids[pos].tolist())
    return tokens, attr[pos].detach().double().numpy()


def attention_to_cls(model, tokenizer, text: str, layer: int = -1, max_length: int = 64):
    """How much [CLS] attends to each token in ``layer``, averaged over heads (n,).

    Attention weights are often shown as explanations; they say where information flowed
    from, not how the output would change without it (and they are never negative).
    Needs eager attention (transformers 5 computes SDPA/flash attention without weights), so
    the model is switched to eager attention for this call.
    """
    import torch

    enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    ids = enc["input_ids"][0]
    pos = _player_positions(tokenizer, ids)
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            att = model(**enc, output_attentions=True).attentions[layer]  # (1, heads, T, T)
    finally:
        model.set_attn_implementation(previous)
    weights = att[0].mean(0)[0]  # from [CLS], (T,)
    return tokenizer.convert_ids_to_tokens(ids[pos].tolist()), weights[pos].double().numpy()
