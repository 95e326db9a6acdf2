"""Fine-tuning a pretrained encoder for sentiment: a linear probe, a full fine-tune, a baseline.

Three ways to turn MiniLM (``data.load_minilm``) and Rotten Tomatoes (``data.load_rotten_tomatoes``)
into a classifier, from cheapest to most expensive:

* ``train_bag_of_words``: no pretrained model at all, word/bigram counts + logistic regression
  (a second, and the baseline every model must beat);
* ``embed_texts`` + ``train_linear_probe``: the encoder is frozen, only a logistic regression on
  its mean-pooled sentence embeddings is trained (seconds);
* ``fine_tune``: every weight of ``BertForSequenceClassification`` is updated with AdamW
  (minutes on 2 CPU cores).

``load_sentiment_classifier`` is the course's shared classifier: MiniLM fully fine-tuned with the
default recipe, trained once and then loaded from the course cache (keyed by its settings).
Later units (quantization, interpretability, bias) use it.

Example
-------
>>> tok, model = load_sentiment_classifier(n_train=64, epochs=1, max_length=32)   # doctest: +SKIP
>>> predict_proba(model, tok, ["A triumph.", "A mess."]).shape                    # doctest: +SKIP
(2, 2)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ._validation import check_int, check_texts
from .resources import cache_dir

__all__ = [
    "set_seed",
    "embed_texts",
    "train_linear_probe",
    "train_bag_of_words",
    "fine_tune",
    "predict_proba",
    "sentiment_classifier_dir",
    "load_sentiment_classifier",
    "LABELS",
]

LABELS = ("rotten", "fresh")  # label ids 0 and 1, as in data.load_rotten_tomatoes


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so a run can be repeated exactly (on the same machine)."""
    import torch

    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name} must be a 1-D sequence with one label per text ({n}), got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name} must hold 0 (rotten) and 1 (fresh) only, got values {np.unique(y)[:10]}")
    return y.astype(np.int64)


def embed_texts(
    model, tokenizer, texts, max_length: int = 64, batch_size: int = 64, progress: bool = True
) -> np.ndarray:
    """Mean-pooled sentence embeddings from a frozen encoder (how sentence-transformers pools).

    Parameters
    ----------
    model : transformers encoder (``BertModel`` from ``load_minilm()``, or a classifier, whose
        ``.base_model`` is used)
    tokenizer : its tokenizer
    texts : list of str, N texts
    max_length : int, tokens kept per text (longer texts are truncated)
    batch_size : int
    progress : bool, show a tqdm bar

    Returns
    -------
    np.ndarray, shape (N, hidden) float32 (hidden = 384 for MiniLM)
    """
    texts = check_texts("texts", texts, allow_empty=False, allow_blank=False)
    check_int("max_length", max_length, minimum=8, maximum=512)
    encoder = getattr(model, "base_model", model)
    encoder.eval()

    def mean_pool(enc):
        hidden = encoder(**enc).last_hidden_state  # (B, T, H)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        # Average over real tokens only: padding must not dilute short reviews.
        return ((hidden * mask).sum(1) / mask.sum(1)).numpy()

    return _map_batches(mean_pool, tokenizer, texts, max_length, batch_size, progress, "embedding").astype(
        np.float32
    )


def _map_batches(fn, tokenizer, texts, max_length, batch_size, progress, desc):
    """``fn(encoded batch) -> np.ndarray`` over ``texts`` in tokenized batches (no grad, tqdm),
    concatenated along the first axis."""
    import torch
    from tqdm.auto import tqdm

    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, leave=False):
            enc = tokenizer(
                texts[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out.append(fn(enc))
    return np.concatenate(out)


def train_linear_probe(features, labels, C: float = 1.0, seed: int = 0):
    """Logistic regression on frozen features (a "linear probe").

    Parameters
    ----------
    features : array (N, D)
    labels : array (N,) of 0/1
    C : float, inverse L2 strength (smaller = stronger regularisation)

    Returns
    -------
    fitted ``sklearn.pipeline.Pipeline`` (standardise, then logistic regression) with
    ``predict`` / ``predict_proba``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N, D), got shape {X.shape}")
    y = _check_labels(labels, len(X))
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C!r}")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    return clf.fit(X, y)


def train_bag_of_words(texts, labels, ngram_range=(1, 2), C: float = 1.0, min_df: int = 1):
    """Word (and bigram) counts + logistic regression: the no-pretraining baseline.

    Returns a fitted ``sklearn.pipeline.Pipeline`` whose ``predict_proba`` takes raw strings.
    Training on ~9,000 snippets takes about a second.
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = check_texts("texts", texts, allow_empty=False, allow_blank=False)
    y = _check_labels(labels, len(texts))
    clf = make_pipeline(
        CountVectorizer(ngram_range=tuple(ngram_range), min_df=min_df, binary=True),
        LogisticRegression(C=C, max_iter=2000),
    )
    return clf.fit(texts, y)


def predict_proba(
    model, tokenizer, texts, max_length: int = 64, batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Class probabilities of a sequence classifier.

    Returns
    -------
    np.ndarray (N, num_labels) float64, rows sum to 1 (column 1 = P(fresh)).
    """
    import torch

    texts = check_texts("texts", texts, allow_empty=False, allow_blank=False)
    check_int("max_length", max_length, minimum=8, maximum=512)
    model.eval()
    return _map_batches(
        lambda enc: torch.softmax(model(**enc).logits.double(), dim=-1).numpy(),
        tokenizer,
        texts,
        max_length,
        batch_size,
        progress,
        "predicting",
    )


def fine_tune(
    model,
    tokenizer,
    train_texts,
    train_labels,
    val_texts=None,
    val_labels=None,
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 5e-5,
    warmup_frac: float = 0.1,
    weight_decay: float = 0.01,
    max_length: int = 64,
    eval_every: int = 25,
    seed: int = 0,
    progress: bool = True,
    micro_batch_size: int | None = None,
) -> list[dict]:
    """Fine-tune every weight of a sequence classifier with AdamW and a linear schedule.

    The recipe of the BERT paper scaled down: lr 5e-5, 10% warm-up then linear decay, batch 32,
    gradient clipping at 1.0. The model is updated in place and left in eval mode.

    Parameters
    ----------
    model : ``BertForSequenceClassification`` (e.g. ``load_minilm(num_labels=2)[1]``)
    train_texts, train_labels : N texts and their 0/1 labels
    val_texts, val_labels : optional held-out set, scored every ``eval_every`` steps
    epochs, batch_size, lr, warmup_frac, weight_decay : the optimisation recipe
    max_length : tokens kept per text
    seed : controls batch order (and dropout)
    micro_batch_size : int or None, examples per forward/backward pass; the gradients of a
        ``batch_size`` batch are accumulated over its micro-batches (each loss weighted by its
        share of the batch), so the update is the same and activation memory shrinks by about
        ``batch_size / micro_batch_size`` (None: the whole batch at once)

    Returns
    -------
    history : list of dicts ``{"step", "epoch", "train_loss"}`` per step, plus ``"val_loss"``
        and ``"val_accuracy"`` on evaluation steps (losses in nats per example).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    train_texts = check_texts("train_texts", train_texts, allow_empty=False, allow_blank=False)
    y = _check_labels(train_labels, len(train_texts), "train_labels")
    if (val_texts is None) != (val_labels is None):
        raise ValueError("pass both val_texts and val_labels, or neither")
    if val_texts is not None:
        val_texts = check_texts("val_texts", val_texts, allow_empty=False, allow_blank=False)
        y_val = _check_labels(val_labels, len(val_texts), "val_labels")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    check_int("max_length", max_length, minimum=8, maximum=512)
    micro = (
        batch_size if micro_batch_size is None else check_int("micro_batch_size", micro_batch_size, minimum=1)
    )

    set_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = (len(train_texts) + batch_size - 1) // batch_size
    total = steps_per_epoch * epochs
    # No weight decay on biases and LayerNorm weights (as in BERT and nanoGPT).
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    sched = get_linear_schedule_with_warmup(opt, int(warmup_frac * total), total)

    def evaluate():
        probs = predict_proba(model, tokenizer, val_texts, max_length=max_length)
        loss = float(-np.log(np.clip(probs[np.arange(len(y_val)), y_val], 1e-12, None)).mean())
        return loss, float((probs.argmax(1) == y_val).mean())

    history, step = [], 0
    bar = tqdm(total=total, desc="fine-tuning", disable=not progress)
    for _epoch in range(epochs):
        order = torch.randperm(len(train_texts), generator=gen).tolist()
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            model.train()
            batch_loss = 0.0
            for m0 in range(0, len(idx), micro):
                sub = idx[m0 : m0 + micro]
                enc = tokenizer(
                    [train_texts[j] for j in sub],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                out = model(**enc, labels=torch.as_tensor(y[sub]))
                (out.loss * (len(sub) / len(idx))).backward()  # mean over the whole batch
                batch_loss += out.loss.item() * len(sub) / len(idx)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            row = {"step": step, "epoch": step / steps_per_epoch, "train_loss": batch_loss}
            if val_texts is not None and (step % eval_every == 0 or step == total):
                row["val_loss"], row["val_accuracy"] = evaluate()
                bar.set_postfix(val_acc=f"{row['val_accuracy']:.3f}")
            history.append(row)
            bar.update(1)
    bar.close()
    model.eval()
    from .adapt import release_free_memory

    opt = sched = out = None
    release_free_memory()  # the optimizer state and activations are freed: give the pages back
    return history


def sentiment_classifier_dir(
    n_train: int = 3000, epochs: int = 2, max_length: int = 64, seed: int = 0
) -> Path:
    """The cache folder of ``load_sentiment_classifier`` for these settings (may not exist yet)."""
    return cache_dir() / f"sentiment-minilm-n{n_train}-e{epochs}-len{max_length}-seed{seed}"


@contextmanager
def _file_lock(path: Path):
    """Hold an exclusive lock on ``path`` (so two processes never train the same model twice)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, the atomic rename below still keeps the cache whole
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_sentiment_classifier(
    n_train: int = 3000,
    epochs: int = 2,
    max_length: int = 64,
    seed: int = 0,
    use_cache: bool = True,
    progress: bool = True,
    return_info: bool = False,
):
    """The course's sentiment classifier: MiniLM fully fine-tuned on Rotten Tomatoes.

    Data: ``load_rotten_tomatoes()`` with its default split (so the test split is the same for
    every caller); the first ``n_train`` rows of its (shuffled) train split are used for training
    and its validation split is scored during training. The first call trains (about 5 minutes
    at the defaults on 2 CPU cores, 0.83 test accuracy); the model is then saved with
    ``save_pretrained`` under the course cache, keyed by the settings, and later calls load it in
    a second or two.

    Parameters
    ----------
    n_train : int >= 16, training snippets
    epochs : int >= 1
    max_length : int, tokens kept per snippet
    seed : int, head initialisation, batch order and dropout
    use_cache : bool, read/write the cache (False always trains, and saves nothing)
    progress : bool, show progress bars while training
    return_info : bool, also return ``info`` (settings, training history, validation accuracy,
        training seconds)

    Returns
    -------
    (tokenizer, model) or (tokenizer, model, info); the model is a
    ``BertForSequenceClassification`` in eval mode with ``id2label = {0: "rotten", 1: "fresh"}``.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .data import load_minilm, load_rotten_tomatoes

    if not isinstance(n_train, int) or n_train < 16:
        raise ValueError(f"n_train must be an int >= 16, got {n_train!r}")
    if not isinstance(epochs, int) or not 1 <= epochs <= 20:
        raise ValueError(f"epochs must be an int between 1 and 20, got {epochs!r}")
    check_int("max_length", max_length, minimum=8, maximum=512)
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")

    settings = {"n_train": n_train, "epochs": epochs, "max_length": max_length, "seed": seed}
    folder = sentiment_classifier_dir(**settings)

    def load_cached():
        info = json.loads((folder / "course_info.json").read_text())
        tok = AutoTokenizer.from_pretrained(folder)
        with _quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        return (tok, model, info) if return_info else (tok, model)

    if use_cache and (folder / "course_info.json").exists():
        return load_cached()
    if use_cache and _train_classifier_in_child(settings, progress):
        return load_cached()

    lock = cache_dir() / f".{folder.name}.lock"
    with _file_lock(lock) if use_cache else _nolock():
        if use_cache and (folder / "course_info.json").exists():  # trained while we waited
            return load_cached()
        ds = load_rotten_tomatoes()
        train = ds["train"]
        if n_train > len(train):
            raise ValueError(f"n_train={n_train} exceeds the {len(train)} training snippets")
        train = train.select(range(n_train))
        set_seed(seed)
        with _quiet_transformers():
            tok, model = load_minilm(num_labels=2)
        model.config.id2label = dict(enumerate(LABELS))
        model.config.label2id = {v: k for k, v in enumerate(LABELS)}
        t0 = time.perf_counter()
        # A fixed 256-snippet slice of validation keeps the learning curve cheap (each full
        # validation pass would cost as much as ~40 training steps on 2 cores).
        val = ds["validation"].select(range(min(256, len(ds["validation"]))))
        total_steps = -(-n_train // 32) * epochs
        history = fine_tune(
            model,
            tok,
            train["text"],
            train["label"],
            val["text"],
            val["label"],
            epochs=epochs,
            max_length=max_length,
            seed=seed,
            progress=progress,
            eval_every=max(1, total_steps // 6),
        )
        seconds = time.perf_counter() - t0
        info = {
            "settings": settings,
            "history": history,
            "train_seconds": round(seconds, 1),
            "val_accuracy": history[-1]["val_accuracy"],
            "torch_threads": torch.get_num_threads(),
        }
        if use_cache:
            tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
            with _quiet_transformers():
                model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "course_info.json").write_text(json.dumps(info, indent=1))
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)  # atomic: a reader sees no folder or a whole one
    return (tok, model, info) if return_info else (tok, model)


def _train_classifier_in_child(settings: dict, progress: bool) -> bool:
    """Train and cache the classifier in a child process; True if the cache is then there.

    Fine-tuning peaks well above what the trained model needs (optimizer state, activations,
    the allocator's leftovers); in a child, a learner's kernel (2 GB on Binder) only ever holds
    the saved model it loads afterwards. The child's output (progress bars) goes to the
    caller's stdout. If the child fails, the caller trains in-process and sees the real error.
    """
    import subprocess
    import sys

    if os.environ.get("OPEN_LLM_LAB_CLASSIFIER_CHILD") == "1":  # we are that child
        return False
    from .paths import COURSE_LIB_DIR

    code = (
        "from course_lib.finetune import load_sentiment_classifier as f; "
        f"f(**{settings!r}, progress={bool(progress)!r})"
    )
    env = dict(os.environ, OPEN_LLM_LAB_CLASSIFIER_CHILD="1")
    pkg_parent = str(COURSE_LIB_DIR.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
    print(
        "sentiment classifier: first use, fine-tuning MiniLM into the course cache in a child process "
        "(about 5 minutes on 2 cores at the default settings; lesson 05 builds the same one)...",
        flush=True,
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if proc.stdout:
        print(proc.stdout[-2000:], end="")
    return proc.returncode == 0 and (sentiment_classifier_dir(**settings) / "course_info.json").exists()


@contextmanager
def _nolock():
    yield


@contextmanager
def _quiet_transformers():
    """Hide transformers' "Loading weights" / "Writing model shards" bars and info logs."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
