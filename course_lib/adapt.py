"""Adapting an open causal LM: chat-formatted SFT data, response-only loss, LoRA (peft), memory.

The pieces, in the order a fine-tune uses them::

    sentiment_prompt(text)                  the instruction for one Rotten Tomatoes snippet
    split_by_movie(ds, n_train, n_test)     train/test with no movie and no near-duplicate shared
    encode_chat_example(tok, prompt, resp)  ids through tok.apply_chat_template; labels -100
                                            everywhere but the response and its end-of-turn token
    collate_sft(examples, pad_id)           right-padded (B, T) batch; padding labelled -100
    add_lora(model, r, alpha, ...)          peft LoraConfig + get_peft_model (W + (alpha/r) B A)
    train_sft(model, examples, steps, lr)   a plain PyTorch AdamW loop with a tqdm bar
    trainable_parameters(model)             {"trainable", "total", "fraction"}
    PeakMemory()                            peak resident memory (RSS) of a block of code
    save_adapter / load_adapter             adapter_model.safetensors round trip
    merge_lora(peft_model, input_ids)       merge_and_unload, with the largest logit change
    label_log_likelihoods(...)              log P(candidate | prompt): classification as generation
    predict_labels(...)                     argmax of those, the labels a model "answers"

Labels follow Hugging Face's convention: ``labels`` are aligned with ``input_ids`` (the model
shifts them internally) and a position that must not be scored is ``-100`` (``IGNORE_INDEX``).
The assistant's response tokens AND the end-of-turn token that closes its turn are scored: the
model must learn to stop.

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) freezes each target weight ``W`` (out, in)
and learns ``W + (alpha / r) * B @ A`` with ``A`` (r, in) random and ``B`` (out, r) zero at the
start, so the adapted model equals the base model before the first step.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ._validation import check_choice, check_int, check_positive_int, check_str, check_tensor, check_texts

__all__ = [
    "IGNORE_INDEX",
    "SENTIMENT_LABELS",
    "SENTIMENT_SYSTEM",
    "sentiment_prompt",
    "split_by_movie",
    "chat_messages",
    "encode_chat_example",
    "truncate_to_tokens",
    "sentiment_sft_examples",
    "collate_sft",
    "add_lora",
    "trainable_parameters",
    "sft_loss",
    "train_sft",
    "PeakMemory",
    "release_free_memory",
    "save_adapter",
    "load_adapter",
    "merge_lora",
    "chat_prompt_ids",
    "label_log_likelihoods",
    "predict_labels",
]

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index

# Label words of the sentiment task: index 0 = rotten (negative), 1 = fresh (positive), the
# order of load_rotten_tomatoes' ClassLabel. Each is a single SmolLM2 token.
SENTIMENT_LABELS = ("negative", "positive")

# A short system turn: without one, SmolLM2's template inserts its own default system prompt
# ("You are a helpful AI assistant named SmolLM, trained by Hugging Face"), ~20 tokens per example.
SENTIMENT_SYSTEM = "You are a helpful assistant."


def sentiment_prompt(text: str) -> str:
    """The user turn that asks for the sentiment of one critic snippet (answer: one label word).

    >>> print(sentiment_prompt("A gorgeous, moving film."))
    Is this movie review positive or negative? Answer with one word.
    Review: A gorgeous, moving film.
    """
    check_str("text", text)
    return f"Is this movie review positive or negative? Answer with one word.\nReview: {text}"


# --------------------------------------------------------------------------------------------
# Data: a split with no shared movie and no near-duplicate across it
# --------------------------------------------------------------------------------------------


def split_by_movie(ds, n_train: int, n_test: int, seed: int = 0, near_dup_threshold: float = 0.5) -> dict:
    """Split Rotten Tomatoes snippets by movie, then drop train snippets near-duplicating a test one.

    Lesson 05 found that a random split puts almost every test movie in the training set too
    (movie-specific words leak the verdict) and a few near-identical snippets on both sides. Here
    whole movies go to one side (``sklearn.model_selection.GroupShuffleSplit``), then lesson 02's
    MinHash tools (word 3-shingles, estimated Jaccard >= ``near_dup_threshold``) find any
    train-test near-duplicates left, and those training snippets are removed.

    Parameters
    ----------
    ds : datasets.Dataset or DatasetDict with columns ``text``, ``label``, ``movie`` (a
        DatasetDict's splits are pooled: the movie split replaces them)
    n_train, n_test : int >= 1, snippets kept on each side (random, seeded, after the split)
    seed : int
    near_dup_threshold : float in (0, 1]

    Returns
    -------
    dict with ``train`` and ``test`` (``datasets.Dataset``) and ``report`` (a dict:
    ``shared_movies``, ``near_duplicates_removed``, ``near_duplicates_left``, ``n_train``,
    ``n_test``, ``test_movies``); ``near_duplicates_left`` and ``shared_movies`` are 0 by
    construction, re-measured on the final splits.

    Examples
    --------
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"text": [f"film {i} is {'good' if i % 2 else 'bad'} indeed" for i in range(40)],
    ...                         "label": [i % 2 for i in range(40)], "movie": [f"m{i // 4}" for i in range(40)]})
    >>> out = split_by_movie(ds, n_train=20, n_test=8)
    >>> out["report"]["shared_movies"], len(out["test"]) <= 8
    (0, True)
    """
    from datasets import DatasetDict, concatenate_datasets
    from sklearn.model_selection import GroupShuffleSplit

    from .datasets_prep import near_duplicate_pairs, normalize_text

    check_positive_int("n_train", n_train)
    check_positive_int("n_test", n_test)
    check_int("seed", seed)
    if isinstance(ds, DatasetDict):
        ds = concatenate_datasets([ds[k] for k in ds])
    for col in ("text", "label", "movie"):
        if col not in ds.column_names:
            raise ValueError(f"ds must have columns text, label and movie, got {ds.column_names}")
    movies = np.array(ds["movie"])
    frac = n_test / (n_train + n_test)
    (train_idx, test_idx), *_ = GroupShuffleSplit(n_splits=1, test_size=frac, random_state=seed).split(
        np.zeros(len(ds)), groups=movies
    )
    rng = np.random.default_rng(seed)
    test_idx = np.sort(rng.permutation(test_idx)[:n_test])
    # take a few spare training snippets so that removing near-duplicates still leaves n_train
    train_idx = rng.permutation(train_idx)[: int(n_train * 1.05) + 5]
    texts = [normalize_text(t) for t in ds.select(train_idx)["text"]]
    test_texts = [normalize_text(t) for t in ds.select(test_idx)["text"]]
    pairs = near_duplicate_pairs(texts + test_texts, threshold=near_dup_threshold, k=3, seed=0)
    leaked = {i for i, j, _ in pairs if i < len(texts) <= j}
    keep = [int(t) for k, t in enumerate(train_idx) if k not in leaked][:n_train]
    train, test = ds.select(sorted(keep)), ds.select(test_idx)
    # re-measure on what is returned
    a = [normalize_text(t) for t in train["text"]]
    b = [normalize_text(t) for t in test["text"]]
    left = [
        p
        for p in near_duplicate_pairs(a + b, threshold=near_dup_threshold, k=3, seed=0)
        if p[0] < len(a) <= p[1]
    ]
    report = {
        "n_train": len(train),
        "n_test": len(test),
        "test_movies": len(set(test["movie"])),
        "shared_movies": len(set(train["movie"]) & set(test["movie"])),
        "near_duplicates_removed": len(leaked),
        "near_duplicates_left": len(left),
    }
    return {"train": train, "test": test, "report": report}


# --------------------------------------------------------------------------------------------
# Chat formatting and response-only labels
# --------------------------------------------------------------------------------------------


def chat_messages(
    prompt: str, response: str | None = None, system: str | None = SENTIMENT_SYSTEM
) -> list[dict]:
    """The conversation as ``[{"role", "content"}, ...]``: optional system, user, optional assistant.

    >>> [m["role"] for m in chat_messages("Hi?", "Hello.")]
    ['system', 'user', 'assistant']
    """
    check_str("prompt", prompt)
    msgs = [] if system is None else [{"role": "system", "content": check_str("system", system)}]
    msgs.append({"role": "user", "content": prompt})
    if response is not None:
        msgs.append({"role": "assistant", "content": check_str("response", response)})
    return msgs


def _template_ids(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "tokenizer has no chat_template; set one (e.g. SmolLM2's ChatML template) with "
            "tokenizer.chat_template = '...' before formatting chats"
        )
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if hasattr(out, "keys") and "input_ids" in out:  # transformers 5 may return a BatchEncoding
        out = out["input_ids"]
    return [int(i) for i in out]


def _end_of_turn_id(tokenizer) -> int:
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            return tid
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no end-of-turn token (<|im_end|>) and no eos_token_id")
    return int(tokenizer.eos_token_id)


def chat_prompt_ids(tokenizer, prompt: str, system: str | None = SENTIMENT_SYSTEM, shots=()) -> list[int]:
    """Token ids of a conversation up to and including the assistant header (generation prompt).

    ``shots`` is a sequence of ``(prompt, response)`` pairs put before it as earlier turns
    (few-shot prompting in a chat model). The model's answer starts right after these ids.
    """
    msgs = [] if system is None else [{"role": "system", "content": check_str("system", system)}]
    for i, shot in enumerate(shots):
        if not (isinstance(shot, (tuple, list)) and len(shot) == 2):
            raise TypeError(f"shots[{i}] must be a (prompt, response) pair, got {shot!r}")
        msgs += [{"role": "user", "content": shot[0]}, {"role": "assistant", "content": shot[1]}]
    msgs.append({"role": "user", "content": check_str("prompt", prompt)})
    return _template_ids(tokenizer, msgs, add_generation_prompt=True)


def encode_chat_example(
    tokenizer,
    prompt: str,
    response: str,
    system: str | None = SENTIMENT_SYSTEM,
    max_length: int | None = None,
) -> dict:
    """One SFT example through ``tokenizer.apply_chat_template``, labels on the response only.

    The full conversation (system, user, assistant) is tokenized by the model's own template;
    the prompt part is the same conversation without the answer plus the generation prompt
    (``<|im_start|>assistant\\n`` for ChatML), which must be a prefix of the full ids. Labels
    are ``IGNORE_INDEX`` on that prefix, equal to ``input_ids`` on the response and on the
    end-of-turn token that closes it (``<|im_end|>``), and ``IGNORE_INDEX`` on whatever the
    template adds after it (ChatML's newline).

    Parameters
    ----------
    tokenizer : a transformers tokenizer with a ``chat_template``
    prompt, response : str, the user turn and the assistant's answer
    system : str or None, the system turn (None lets the template insert its default, if any)
    max_length : int or None, raise if the example is longer (truncate the text first, see
        :func:`truncate_to_tokens`); cutting a chat anywhere else would drop the answer

    Returns
    -------
    dict ``input_ids``, ``labels`` (lists of int, equal length T), ``prompt_len`` (int)
    """
    full = _template_ids(tokenizer, chat_messages(prompt, response, system), add_generation_prompt=False)
    head = _template_ids(tokenizer, chat_messages(prompt, None, system), add_generation_prompt=True)
    if full[: len(head)] != head:
        raise ValueError(
            "the chat template's prompt (with add_generation_prompt=True) is not a prefix of the "
            "full conversation's ids; response-only masking needs a template where it is"
        )
    eot = _end_of_turn_id(tokenizer)
    try:
        end = full.index(eot, len(head)) + 1  # include the end-of-turn token
    except ValueError:
        raise ValueError(f"no end-of-turn token (id {eot}) after the response in the templated ids") from None
    if end == len(head) + 1 and not response:
        raise ValueError("response is empty: nothing to learn")
    labels = [IGNORE_INDEX] * len(head) + full[len(head) : end] + [IGNORE_INDEX] * (len(full) - end)
    if max_length is not None and len(full) > check_positive_int("max_length", max_length):
        raise ValueError(
            f"the example has {len(full)} tokens, more than max_length={max_length}; shorten the "
            "prompt text first (truncate_to_tokens) or raise max_length"
        )
    return {"input_ids": full, "labels": labels, "prompt_len": len(head)}


def truncate_to_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """``text`` cut to at most ``max_tokens`` tokens (decoded back to a str, whitespace kept).

    >>> class Words:  # a stand-in tokenizer: one token per character
    ...     def encode(self, t, add_special_tokens=False): return list(t)
    ...     def decode(self, ids): return "".join(ids)
    >>> truncate_to_tokens(Words(), "abcdef", 4)
    'abcd'
    """
    check_str("text", text)
    check_int("max_tokens", max_tokens, minimum=0)
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def sentiment_sft_examples(
    tokenizer, texts, labels, max_length: int = 64, system: str | None = SENTIMENT_SYSTEM
) -> list[dict]:
    """Chat SFT examples for the sentiment task, each at most ``max_length`` tokens.

    Each snippet is truncated so that the whole templated example fits (the template, the
    instruction and the one-word answer keep their tokens; the review loses its tail).

    Parameters
    ----------
    texts : list of str, labels : sequence of 0/1 (0 = rotten -> "negative", 1 = fresh -> "positive")

    Returns
    -------
    list of :func:`encode_chat_example` dicts, plus ``"label"`` (0/1) and ``"prompt"`` (the user
    turn with the truncated review, e.g. for :func:`chat_prompt_ids` and few-shot demonstrations)
    """
    texts = check_texts("texts", texts)
    labels = [int(v) for v in labels]
    if len(labels) != len(texts):
        raise ValueError(f"texts and labels must have the same length, got {len(texts)} and {len(labels)}")
    if any(v not in (0, 1) for v in labels):
        raise ValueError("labels must hold 0 (rotten/negative) or 1 (fresh/positive) only")
    check_positive_int("max_length", max_length)
    overhead = max(
        len(encode_chat_example(tokenizer, sentiment_prompt(""), w, system)["input_ids"])
        for w in SENTIMENT_LABELS
    )
    budget = max_length - overhead
    if budget < 4:
        raise ValueError(
            f"max_length={max_length} leaves {budget} tokens for the review after the template "
            f"({overhead} tokens); use max_length >= {overhead + 4}"
        )
    out = []
    for text, y in zip(texts, labels):
        prompt = sentiment_prompt(truncate_to_tokens(tokenizer, text, budget))
        ex = encode_chat_example(tokenizer, prompt, SENTIMENT_LABELS[y], system)
        if len(ex["input_ids"]) > max_length:  # decode/encode round trips can add a token
            prompt = sentiment_prompt(truncate_to_tokens(tokenizer, text, budget - 2))
            ex = encode_chat_example(tokenizer, prompt, SENTIMENT_LABELS[y], system, max_length)
        ex["label"], ex["prompt"] = y, prompt
        out.append(ex)
    return out


def collate_sft(examples: Sequence[dict], pad_id: int, padding_side: str = "right") -> dict:
    """Pad a list of examples into a batch of tensors.

    Training pads on the **right** (default): real tokens start at position 0, so positions are
    the same with or without padding. Padding gets ``attention_mask`` 0 and label
    ``IGNORE_INDEX``, so it is never scored, whatever ``pad_id`` is (SmolLM2's pad token is its
    end-of-turn token ``<|im_end|>``: a mask built from ``input_ids == pad_id`` would wrongly
    hide the scored end-of-turn tokens). ``padding_side="left"`` is for scoring the last token.

    Parameters
    ----------
    examples : list of dicts with ``input_ids`` and (optionally) ``labels``, lists of int
    pad_id : int
    padding_side : "right" or "left"

    Returns
    -------
    dict of LongTensors (B, T): ``input_ids``, ``attention_mask``, ``labels``

    Examples
    --------
    >>> b = collate_sft([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}], pad_id=0)
    >>> b["input_ids"].tolist(), b["labels"].tolist(), b["attention_mask"].tolist()
    ([[5, 6, 7], [8, 0, 0]], [[-100, 6, 7], [8, -100, -100]], [[1, 1, 1], [1, 0, 0]])
    """
    check_int("pad_id", pad_id, minimum=0)
    check_choice("padding_side", padding_side, ("right", "left"))
    if not examples:
        raise ValueError("examples must hold at least one example, got an empty list")
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        x = e["input_ids"]
        y = e.get("labels", x)
        if len(y) != len(x):
            raise ValueError(f"examples[{i}] has {len(x)} input_ids but {len(y)} labels; they must align")
        n = len(x)
        sl = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[i, sl] = torch.as_tensor(x, dtype=torch.long)
        labels[i, sl] = torch.as_tensor(y, dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# --------------------------------------------------------------------------------------------
# LoRA, parameter counts, the training loop
# --------------------------------------------------------------------------------------------


def add_lora(
    model,
    r: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    target_modules=("q_proj", "v_proj"),
    seed: int = 0,
):
    """Wrap ``model`` with LoRA adapters through peft (``LoraConfig`` + ``get_peft_model``).

    Every ``nn.Linear`` whose name ends with one of ``target_modules`` becomes
    ``W x + (lora_alpha / r) * B (A (dropout(x)))`` with ``W`` frozen, ``A`` (r, in) Kaiming-random,
    ``B`` (out, r) zero; everything else is frozen too. peft injects the layers into ``model``
    itself (the returned ``PeftModel`` wraps the same modules); ``.unload()`` gives it back.

    Parameters
    ----------
    model : a transformers causal LM (e.g. LlamaForCausalLM)
    r : int >= 1, the rank
    lora_alpha : float > 0, the scale numerator (the update is scaled by lora_alpha / r)
    lora_dropout : float in [0, 1)
    target_modules : sequence of str, module-name suffixes ("q_proj", "k_proj", "v_proj",
        "o_proj", "gate_proj", "up_proj", "down_proj" in a Llama)
    seed : int, seeds the random A matrices

    Returns
    -------
    peft.PeftModel
    """
    from peft import LoraConfig, get_peft_model

    check_positive_int("r", r)
    if not isinstance(lora_alpha, (int, float)) or isinstance(lora_alpha, bool) or lora_alpha <= 0:
        raise ValueError(f"lora_alpha must be a number > 0, got {lora_alpha!r}")
    if not isinstance(lora_dropout, (int, float)) or not 0 <= lora_dropout < 1:
        raise ValueError(f"lora_dropout must be a number in [0, 1), got {lora_dropout!r}")
    target_modules = check_texts("target_modules", target_modules, allow_str=True, allow_empty=False)
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in target_modules if t not in names]
    if missing:
        raise ValueError(
            f"target_modules must name linear layers of the model, got {missing}; it has {sorted(names)}"
        )
    cfg = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    return get_peft_model(model, cfg)


def trainable_parameters(model) -> dict:
    """Trainable and total parameter counts (shared tensors counted once) and their ratio.

    >>> lin = torch.nn.Linear(4, 2)
    >>> lin.bias.requires_grad_(False)
    Parameter containing:
    ...
    >>> trainable_parameters(lin)
    {'trainable': 8, 'total': 10, 'fraction': 0.8}
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    trainable = total = 0
    for p in model.parameters():  # parameters() yields a tied tensor once
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {"trainable": trainable, "total": total, "fraction": trainable / total if total else 0.0}


def _checkpointing(model, on: bool) -> None:
    # transformers 5 renamed gradient_* to activation_checkpointing_*; accept both
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def sft_loss(model, batch: dict, reduction: str = "mean") -> torch.Tensor:
    """Mean cross-entropy (nats) over the scored tokens of a batch, computing logits only where needed.

    Same value as ``model(**batch).loss`` (labels aligned with ``input_ids``, shifted by one
    inside: the logits at position t predict token t+1; ``IGNORE_INDEX`` skipped). With a
    49,152-token vocabulary the output layer is a fifth of SmolLM2's compute and its (B, T, V)
    float32 logits ~100 MB per 8x64 batch, while an SFT batch of short answers scores only a few
    positions; so the model is asked for the logits of positions that predict a scored token
    (``logits_to_keep`` with an index tensor), in every row.

    Parameters
    ----------
    model : a transformers causal LM (or a PeftModel around one)
    batch : dict of LongTensors (B, T): ``input_ids``, ``attention_mask``, ``labels``
    reduction : "mean" (nats per scored token) or "sum" (nats over the batch's scored tokens,
        what gradient accumulation adds up before dividing by the whole batch's count)

    Returns
    -------
    scalar tensor (differentiable)
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    labels = check_tensor("batch['labels']", batch["labels"], ndim=2)
    scored = labels[:, 1:] != IGNORE_INDEX  # (B, T-1): position t predicts label t+1
    if not scored.any():
        raise ValueError("the batch has no scored token (every label is -100): check the masking")
    pos = scored.any(0).nonzero().squeeze(1)  # positions needed by at least one row
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=pos
    ).logits  # (B, P, V)
    target = labels[:, pos + 1]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        target.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


def train_sft(
    model,
    examples: Sequence[dict],
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 8,
    pad_id: int = 0,
    weight_decay: float = 0.0,
    seed: int = 0,
    device="cpu",
    gradient_checkpointing: bool = False,
    progress: bool = True,
    micro_batch_size: int | None = None,
) -> dict:
    """Supervised fine-tuning: AdamW on the trainable parameters, mean loss over scored tokens.

    Each step draws ``batch_size`` examples (shuffled epochs, seeded), pads them on the right
    (:func:`collate_sft`) and minimises the model's own loss: cross-entropy of every position
    whose label is not ``IGNORE_INDEX``, averaged over those positions. Constant learning rate,
    gradient norm clipped to 1. With ``micro_batch_size`` the step's examples go through the
    model that many at a time (gradient accumulation): each micro-batch's summed loss is divided
    by the whole batch's number of scored tokens before ``backward``, so the gradient is the
    full batch's (up to float rounding and dropout draws) while activations are held for one
    micro-batch only.

    Parameters
    ----------
    model : causal LM (a ``PeftModel`` trains only its adapters)
    examples : list of dicts with ``input_ids`` and ``labels``
    steps : int >= 1, lr : float > 0, batch_size : int >= 1
    pad_id : int, the id used for padding (ignored by the loss)
    device : "cpu", "cuda" or "auto"
    gradient_checkpointing : bool, recompute each layer's activations in the backward pass
        instead of keeping them (about 1/3 more compute, activation memory ~ one layer's):
        what keeps SmolLM2's LoRA step under Binder's 2 GB
    micro_batch_size : int >= 1 or None (None: the whole batch in one pass)

    Returns
    -------
    dict ``losses`` (list of float, nats per scored token, one per step), ``seconds`` (wall),
    ``tokens`` (input tokens processed, padding excluded), ``tokens_per_s``
    """
    from tqdm.auto import tqdm

    from .profiling import resolve_device, synchronize

    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    micro = (
        batch_size if micro_batch_size is None else check_positive_int("micro_batch_size", micro_batch_size)
    )
    if not isinstance(lr, (int, float)) or lr <= 0:
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    if not examples:
        raise ValueError("examples must hold at least one example, got an empty list")
    dev = resolve_device(device)
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (all requires_grad=False); add LoRA or unfreeze")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if gradient_checkpointing:
        _checkpointing(model, True)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # dropout
    order: list[int] = []
    losses, tokens = [], 0
    synchronize(dev)
    t0 = time.perf_counter()
    for _ in tqdm(range(steps), desc="SFT", disable=not progress):
        if len(order) < batch_size:
            order += rng.permutation(len(examples)).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        chunk = [examples[i] for i in idx]
        n_scored = sum(sum(t != IGNORE_INDEX for t in e["labels"][1:]) for e in chunk)
        if n_scored == 0:
            raise ValueError("a batch has no scored token (every label is -100): check the masking")
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for s in range(0, len(chunk), micro):
            batch = {k: v.to(dev) for k, v in collate_sft(chunk[s : s + micro], pad_id).items()}
            tokens += int(batch["attention_mask"].sum())
            if not (batch["labels"][:, 1:] != IGNORE_INDEX).any():
                continue  # nothing scored in this micro-batch: it adds no gradient
            loss = sft_loss(model, batch, reduction="sum") / n_scored
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(step_loss)
    synchronize(dev)
    seconds = time.perf_counter() - t0
    if gradient_checkpointing:
        _checkpointing(model, False)
    model.eval()
    del batch, opt
    _release_free_memory()  # hand the step's freed buffers back to the OS before the next cell
    return {"losses": losses, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so that
    a measurement starts from what is really in use and the next model fits in a 2 GB kernel.

    After ``del model`` the Python objects are gone but glibc keeps the freed pages in its heap,
    so the process RSS does not drop; this gives them back. A no-op where libc is not glibc.

    >>> release_free_memory()
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to trim
        pass


_release_free_memory = release_free_memory  # the name used inside this module


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak resident memory (RSS, bytes) of this process while a ``with`` block runs.

    Entry first collects garbage and returns freed heap pages to the OS (``malloc_trim``). On
    Linux the kernel's own high-water mark (``VmHWM``) is reset at entry (``/proc/self/clear_refs``)
    and read at exit, so short spikes are caught; elsewhere a thread samples RSS with psutil
    every ``interval`` seconds (a lower bound). ``peak`` is the whole process (the model
    already loaded included), ``start`` the RSS at entry, ``delta = peak - start`` what the block
    added. Memory freed earlier but kept by the allocator can hide part of ``delta``: for fair
    comparisons run each arm in a fresh process (``benchmarks/lora.py`` does). On CUDA,
    ``cuda_peak`` holds ``torch.cuda.max_memory_allocated`` (bytes) for the block.

    >>> with PeakMemory() as mem:
    ...     x = torch.ones(2**22)  # 16 MiB
    >>> mem.peak >= mem.start > 0
    True
    """

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.start = self.peak = self.delta = 0
        self.cuda_peak = None
        self.method = ""

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self):
        _release_free_memory()
        self.start = _rss_bytes()
        self._kernel = _reset_hwm() and _hwm_bytes() is not None
        self._max = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        end = _rss_bytes()
        sampled = max(self._max, end)
        hwm = _hwm_bytes() if self._kernel else None
        self.peak = max(sampled, hwm or 0)
        self.method = "VmHWM" if hwm else "psutil sampling"
        self.delta = self.peak - self.start
        if torch.cuda.is_available():
            self.cuda_peak = int(torch.cuda.max_memory_allocated())
        return False

    def __repr__(self) -> str:
        return (
            f"PeakMemory(peak={self.peak / 2**20:.0f} MiB, delta={self.delta / 2**20:.0f} MiB, {self.method})"
        )


# --------------------------------------------------------------------------------------------
# Adapters on disk, merging
# --------------------------------------------------------------------------------------------


def save_adapter(peft_model, folder) -> Path:
    """Save only the LoRA weights and config (``adapter_model.safetensors``, ``adapter_config.json``).

    Returns the path of the safetensors file (a few MB for r=8 on q_proj, v_proj of SmolLM2, not
    the 540 MB of the base model).
    """
    from peft import PeftModel

    if not isinstance(peft_model, PeftModel):
        raise TypeError(
            f"peft_model must be a peft.PeftModel (see add_lora), got {type(peft_model).__name__}"
        )
    folder = Path(folder)
    peft_model.save_pretrained(folder, safe_serialization=True)
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        raise RuntimeError(f"peft did not write {path}; check the peft version pinned in pyproject.toml")
    return path


def load_adapter(base_model, folder, trainable: bool = False):
    """Attach a saved adapter to a base model: ``PeftModel.from_pretrained(base_model, folder)``.

    The base model must be the one the adapter was trained on (same architecture and weights).
    """
    from peft import PeftModel

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{folder} has no adapter_config.json; save one with save_adapter(model, folder)"
        )
    return PeftModel.from_pretrained(base_model, folder, is_trainable=trainable)


@torch.no_grad()
def merge_lora(peft_model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """Fold the adapters into the weights (``W <- W + (alpha/r) B A``) and check nothing changed.

    Runs ``input_ids`` through the adapted model, merges with ``merge_and_unload`` (which
    returns the plain base-class model, no peft layers left, as fast as the base), runs the same
    ids again and reports the largest absolute logit difference (float rounding only: ~1e-5 in
    float32).

    Parameters
    ----------
    peft_model : peft.PeftModel, input_ids : LongTensor (B, T), attention_mask : (B, T) or None

    Returns
    -------
    (merged_model, max_abs_logit_diff: float)
    """
    from peft import PeftModel

    if not isinstance(peft_model, PeftModel):
        raise TypeError(
            f"peft_model must be a peft.PeftModel (see add_lora), got {type(peft_model).__name__}"
        )
    check_tensor("input_ids", input_ids, ndim=2)
    peft_model.eval()
    rows = [
        (input_ids[i : i + 1], None if attention_mask is None else attention_mask[i : i + 1])
        for i in range(len(input_ids))
    ]
    with torch.no_grad():  # one row at a time: a (1, T, V) float32 logit tensor is enough
        before = [peft_model(input_ids=ids, attention_mask=m).logits for ids, m in rows]
        merged = peft_model.merge_and_unload()
        diff = max(
            float((b - merged(input_ids=ids, attention_mask=m).logits).abs().max())
            for b, (ids, m) in zip(before, rows)
        )
    del before
    _release_free_memory()
    return merged, diff


# --------------------------------------------------------------------------------------------
# Classification as generation
# --------------------------------------------------------------------------------------------


def _candidate_ids(tokenizer, candidates) -> list[list[int]]:
    candidates = check_texts("candidates", candidates, allow_empty=False, allow_blank=False)
    if len(candidates) < 2:
        raise ValueError(f"candidates must hold at least two answers to choose from, got {candidates}")
    return [tokenizer.encode(c, add_special_tokens=False) for c in candidates]


@torch.no_grad()
def label_log_likelihoods(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    candidates=SENTIMENT_LABELS,
    batch_size: int = 16,
    progress: bool = False,
) -> np.ndarray:
    """``log P(candidate | prompt)`` under a causal LM, summed over each candidate's tokens.

    Each prompt is a list of token ids ending where the answer starts (e.g. :func:`chat_prompt_ids`,
    which ends with the assistant header). When every candidate is one token, one forward pass
    per prompt gives all of them: prompts are padded on the **left** with explicit position ids,
    and only the last position's logits are computed (``logits_to_keep=1``). Otherwise each
    (prompt, candidate) pair is scored in its own right-padded row.

    Parameters
    ----------
    model : causal LM, tokenizer : its tokenizer
    prompt_ids : list of lists of int, N prompts
    candidates : list of str, C answers (e.g. ``SENTIMENT_LABELS``)
    batch_size : int >= 1, rows per forward pass

    Returns
    -------
    np.ndarray (N, C) of log-probabilities (nats)
    """
    from tqdm.auto import tqdm

    check_positive_int("batch_size", batch_size)
    cand = _candidate_ids(tokenizer, candidates)
    prompts = [list(map(int, p)) for p in prompt_ids]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompt_ids must hold at least one prompt, each with at least one token")
    dev = next(model.parameters()).device
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros((len(prompts), len(cand)))
    if all(len(c) == 1 for c in cand):
        first = torch.tensor([c[0] for c in cand])
        for s in tqdm(range(0, len(prompts), batch_size), desc="scoring", disable=not progress, leave=False):
            b = collate_sft([{"input_ids": p} for p in prompts[s : s + batch_size]], pad, "left")
            mask = b["attention_mask"].to(dev)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(
                input_ids=b["input_ids"].to(dev), attention_mask=mask, position_ids=pos, logits_to_keep=1
            ).logits[:, -1]
            out[s : s + batch_size] = torch.log_softmax(logits.float(), -1)[:, first.to(dev)].cpu().numpy()
        del b, mask, pos, logits
        _release_free_memory()
        return out
    rows = [(i, j, p + c, len(p)) for i, p in enumerate(prompts) for j, c in enumerate(cand)]
    for s in tqdm(range(0, len(rows), batch_size), desc="scoring", disable=not progress, leave=False):
        chunk = rows[s : s + batch_size]
        b = collate_sft([{"input_ids": r[2]} for r in chunk], pad, "right")
        logp = torch.log_softmax(
            model(
                input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev)
            ).logits.float(),
            -1,
        )
        for k, (i, j, ids, n_prompt) in enumerate(chunk):
            tgt = torch.tensor(ids[n_prompt:], device=dev)
            pos = torch.arange(n_prompt - 1, len(ids) - 1, device=dev)  # logits at t predict token t+1
            out[i, j] = float(logp[k, pos, tgt].sum())
    del b, logp
    _release_free_memory()
    return out


def predict_labels(
    model, tokenizer, prompt_ids, candidates=SENTIMENT_LABELS, batch_size: int = 16, progress: bool = False
) -> np.ndarray:
    """Index of the most likely candidate for each prompt (argmax of :func:`label_log_likelihoods`).

    Returns np.ndarray (N,) of int in ``[0, len(candidates))``; with ``SENTIMENT_LABELS`` that is
    the 0/1 label of ``load_rotten_tomatoes`` (0 = rotten/negative, 1 = fresh/positive).
    """
    return label_log_likelihoods(model, tokenizer, prompt_ids, candidates, batch_size, progress).argmax(1)
