"""Pretraining the course GPT: byte-level data, the training loop, bits per byte, checkpoints.

Read top to bottom, this is everything between "a string of Shakespeare" and "a trained model":

1. ``ByteTokenizer``: text <-> UTF-8 bytes. Vocabulary 256, nothing to learn, and one token is
   exactly one byte, so the loss in bits per token *is* bits per byte.
2. ``get_batch``: random windows of ``block_size + 1`` bytes; inputs are the first T, targets the
   last T (the same window shifted by one: predict the next byte at every position).
3. ``TrainConfig`` + ``train``: AdamW, linear warmup then cosine decay, gradient clipping,
   optional bfloat16 autocast, periodic validation, callbacks, checkpoints and exact resume.
4. ``evaluate_bits_per_byte``: validation loss in bits per byte, comparable across tokenizers.
5. ``load_course_gpt``: the lessons' trained Shakespeare GPT, trained once then cached.

Example
-------
>>> from course_lib.model import make_config, build_model
>>> tok = ByteTokenizer()
>>> ids = tok.encode("To be, or not to be, that is the question. " * 40)
>>> model = build_model(make_config("tiny"))
>>> history = train(model, ids, ids, TrainConfig(max_steps=5, batch_size=4, block_size=32,
...                 eval_interval=5, eval_batches=1, progress=False))
>>> sorted(history[-1])[:3]
['elapsed_s', 'lr', 'step']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

__all__ = [
    "ByteTokenizer",
    "bits_per_byte",
    "shakespeare_bytes",
    "get_batch",
    "TrainConfig",
    "lr_at",
    "train",
    "evaluate_bits_per_byte",
    "save_checkpoint",
    "load_checkpoint",
    "save_pretrained_quietly",
    "COURSE_RECIPES",
    "load_course_gpt",
]

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------
# 1. Bytes as tokens
class ByteTokenizer:
    """UTF-8 byte-level tokenizer: every byte is a token id in [0, 256).

    No training, no unknown tokens, no special tokens. ``encode`` returns a 1-D ``torch.uint8``
    tensor (1 byte per id in memory); ``decode`` turns ids back into text (invalid UTF-8, e.g. a
    multi-byte character cut in half by sampling, becomes U+FFFD).

    Examples
    --------
    >>> tok = ByteTokenizer()
    >>> tok.encode("Hé").tolist()
    [72, 195, 169]
    >>> tok.decode([72, 195, 169])
    'Hé'
    """

    vocab_size = 256

    def encode(self, text: str) -> torch.Tensor:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)

    def decode(self, ids) -> str:
        ids = torch.as_tensor(ids).flatten().tolist()
        if any(not 0 <= int(i) < 256 for i in ids):
            raise ValueError("ids must all be byte values in [0, 256)")
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def __call__(self, text: str) -> torch.Tensor:
        return self.encode(text)

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


def bits_per_byte(loss_nats_per_token: float, n_tokens: int = 1, n_bytes: int = 1) -> float:
    """Convert a mean cross-entropy (nats per token) into bits per byte.

    bits/byte = loss / ln 2 * (tokens / bytes). With a byte tokenizer tokens == bytes; for a BPE
    model pass the token and byte counts of the evaluated text, so models with different
    tokenizers become comparable. Perplexity per token is ``exp(loss)``.

    >>> round(bits_per_byte(math.log(2)), 6)
    1.0
    """
    if n_tokens <= 0 or n_bytes <= 0:
        raise ValueError(f"n_tokens and n_bytes must be positive, got {n_tokens} and {n_bytes}")
    return float(loss_nats_per_token) / LN2 * n_tokens / n_bytes


def shakespeare_bytes(split: str = "train") -> torch.Tensor:
    """The Shakespeare ``split`` ("train" or "validation", split by play) as byte ids (uint8, 1-D).

    Same text as ``course_lib.data.shakespeare_text(split)`` (plays joined by a newline), built
    from the plays directly so that it does not need to import ``datasets``.
    """
    from .data import SHAKESPEARE_VALIDATION_PLAYS, shakespeare_plays

    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    held = set(SHAKESPEARE_VALIDATION_PLAYS)
    text = "\n".join(p["text"] for p in shakespeare_plays() if (p["slug"] in held) == (split == "validation"))
    return ByteTokenizer().encode(text)


def _check_ids(ids, name: str, min_len: int) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor):
        raise TypeError(
            f"{name} must be a 1-D torch.Tensor of token ids (e.g. ByteTokenizer().encode(text)), "
            f"got {type(ids).__name__}"
        )
    if ids.dim() != 1 or ids.dtype.is_floating_point:
        raise ValueError(
            f"{name} must be a 1-D integer tensor, got shape {tuple(ids.shape)} dtype {ids.dtype}"
        )
    if ids.numel() < min_len:
        raise ValueError(f"{name} has {ids.numel()} tokens; need at least block_size + 1 = {min_len}")
    return ids


# ----------------------------------------------------------------------------------------------
# 2. Batches
def get_batch(
    ids: torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device="cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``ids``: inputs ``x`` and next-token targets ``y``.

    Returns
    -------
    x, y : torch.LongTensor, each (batch_size, block_size); ``y[:, t] == x[:, t + 1]`` (shift by one).
    """
    ids = _check_ids(ids, "ids", block_size + 1)
    windows = ids.unfold(0, block_size + 1, 1)  # (N, T+1) view, no copy
    rows = torch.randint(len(windows), (batch_size,), generator=generator)
    chunk = windows[rows].long()  # (B, T+1)
    x, y = chunk[:, :-1], chunk[:, 1:]
    return x.to(device), y.to(device)


# ----------------------------------------------------------------------------------------------
# 3. The loop
@dataclass
class TrainConfig:
    """Everything that defines a training run (the model's shape lives in its LlamaConfig).

    Units: ``batch_size`` in sequences, ``block_size`` in tokens, ``learning_rate`` is the peak
    after warmup, times in seconds. One step sees ``batch_size * block_size`` tokens.
    """

    max_steps: int = 2000
    batch_size: int = 32
    block_size: int = 128
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1  # applied to matrices only, not to norms
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float | None = 1.0  # max global grad norm; None = no clipping
    autocast: bool = False  # bfloat16 autocast for matmuls (CPU or CUDA)
    eval_interval: int = 250  # validate every N steps (and at the end)
    eval_batches: int = 20  # validation batches per evaluation (None = the whole split)
    log_interval: int = 10  # history record every N steps
    seed: int = 0  # data order (initialisation is build_model's seed)
    max_seconds: float | None = None  # stop early once this much wall time has passed
    device: str = "cpu"
    progress: bool = True  # tqdm bar
    checkpoint_dir: str | None = None  # save_pretrained + optimizer state here ...
    checkpoint_interval: int | None = None  # ... every N steps (None = only at the end)
    resume: bool = False  # continue from checkpoint_dir if it holds a checkpoint

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "block_size", "eval_interval", "log_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.resume and not self.checkpoint_dir:
            raise ValueError("TrainConfig.resume=True needs checkpoint_dir (where to resume from)")
        self.betas = tuple(self.betas)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step`` (0-based): linear warmup to the peak, then cosine to the floor.

    Warmup keeps Adam's first, badly-estimated updates small; the cosine decay lets the model
    settle into a minimum at the end instead of bouncing around it.
    """
    peak, floor = cfg.learning_rate, cfg.learning_rate * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights (matmuls, embeddings) and none on norm scales/biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=cfg.betas, foreach=True)


def next_token_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of predicting ``y`` from ``x``, both (B, T); already shifted."""
    logits = model(input_ids=x).logits  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))


def _autocast(cfg: TrainConfig):
    device_type = torch.device(cfg.device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.autocast)


def train(
    model,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor | None,
    cfg: TrainConfig,
    callbacks: Iterable[Callable[[dict], bool | None]] = (),
) -> list[dict]:
    """Train ``model`` (a causal LM: ``model(input_ids=x).logits``) on next-token prediction.

    Parameters
    ----------
    model : transformers.PreTrainedModel (e.g. ``course_lib.model.build_model(...)``), trained in place.
    train_ids, val_ids : 1-D integer tensors of token ids (``val_ids`` may be None: no validation).
    cfg : TrainConfig
    callbacks : callables, each called with every history record (a dict) as it is made; a
        callback that returns True stops training (after that step, with a final evaluation).

    Returns
    -------
    history : list of dicts, one every ``log_interval`` steps and one per evaluation, with keys
        ``step`` (steps done), ``lr``, ``train_loss`` (nats/token, mean since the last record),
        ``tokens_per_s``, ``tokens_seen``, ``elapsed_s`` and, on evaluation records,
        ``val_loss`` (nats/token) and ``val_bpb`` (bits per byte, for byte-level ids).
        ``pandas.DataFrame(history)`` makes a table of it.
    """
    from tqdm.auto import tqdm

    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    train_ids = _check_ids(train_ids, "train_ids", cfg.block_size + 1)
    if val_ids is not None:
        val_ids = _check_ids(val_ids, "val_ids", cfg.block_size + 1)
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_pos is not None and cfg.block_size > max_pos:
        raise ValueError(
            f"cfg.block_size ({cfg.block_size}) exceeds the model's max_position_embeddings ({max_pos})"
        )
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and int(train_ids.max()) >= vocab:
        raise ValueError(
            f"train_ids contains id {int(train_ids.max())} but the model's vocab_size is {vocab}"
        )
    callbacks = list(callbacks)

    model.to(cfg.device).train()
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    step, history = 0, []
    if cfg.resume and cfg.checkpoint_dir and (Path(cfg.checkpoint_dir) / "trainer_state.pt").exists():
        step, history = load_checkpoint(cfg.checkpoint_dir, model, optimizer, generator)

    def evaluate() -> dict:
        loss = _mean_loss(model, val_ids, cfg.block_size, cfg.batch_size, cfg.eval_batches, cfg)
        return {"val_loss": loss, "val_bpb": loss / LN2}

    def record(extra: dict) -> bool:
        rec = {
            "step": step,
            "lr": lr,
            "elapsed_s": elapsed + time.perf_counter() - t0,
            "tokens_seen": step * tokens_per_step,
            **extra,
        }
        history.append(rec)
        return any(bool(cb(rec)) for cb in callbacks)

    tokens_per_step = cfg.batch_size * cfg.block_size
    elapsed = history[-1]["elapsed_s"] if history else 0.0
    t0 = t_log = time.perf_counter()
    loss_sum, loss_n, lr, stop = 0.0, 0, lr_at(step, cfg), False
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        disable=not cfg.progress,
        desc="training",
        unit="step",
        dynamic_ncols=True,
    )
    while step < cfg.max_steps and not stop:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_ids, cfg.batch_size, cfg.block_size, generator, cfg.device)
        with _autocast(cfg):
            loss = next_token_loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
        optimizer.step()
        step += 1
        loss_sum += loss.item()
        loss_n += 1
        bar.update(1)

        last = step == cfg.max_steps
        if cfg.max_seconds is not None and elapsed + time.perf_counter() - t0 >= cfg.max_seconds:
            stop = last = True
        if step % cfg.log_interval == 0 or last:
            now = time.perf_counter()
            tps = loss_n * tokens_per_step / max(now - t_log, 1e-9)
            stop |= record({"train_loss": loss_sum / loss_n, "tokens_per_s": tps})
            bar.set_postfix(loss=f"{loss_sum / loss_n:.3f}", tok_s=f"{tps:,.0f}")
            loss_sum, loss_n, t_log = 0.0, 0, now
        if val_ids is not None and (step % cfg.eval_interval == 0 or last or stop):
            t_eval = time.perf_counter()
            stop |= record(evaluate())
            bar.set_postfix(loss=bar.postfix, val_bpb=f"{history[-1]['val_bpb']:.3f}")
            t_log += time.perf_counter() - t_eval  # evaluation time does not count against tokens/s
        if cfg.checkpoint_dir and (
            last or stop or (cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0)
        ):
            save_checkpoint(cfg.checkpoint_dir, model, optimizer, generator, step, history)
    bar.close()
    return history


@torch.no_grad()
def _mean_loss(model, ids, block_size, batch_size, max_batches, cfg=None) -> float:
    """Mean next-token loss (nats) over non-overlapping windows of ``ids``, evenly spread over the
    whole split when ``max_batches`` limits how many are used (deterministic, no RNG)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    windows = ids.unfold(0, block_size + 1, block_size)  # (N, T+1), consecutive windows share one token
    n = len(windows)
    if max_batches is not None:
        n_use = min(n, max_batches * batch_size)
        rows = torch.linspace(0, n - 1, n_use).round().long()
    else:
        rows = torch.arange(n)
    total, count = 0.0, 0
    autocast = _autocast(cfg) if cfg is not None else torch.autocast(device.type, enabled=False)
    for start in range(0, len(rows), batch_size):
        chunk = windows[rows[start : start + batch_size]].long().to(device)
        with autocast:
            logits = model(input_ids=chunk[:, :-1]).logits
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), chunk[:, 1:].reshape(-1), reduction="sum"
        )
        total += loss.item()
        count += chunk[:, 1:].numel()
    model.train(was_training)
    return total / count


# ----------------------------------------------------------------------------------------------
# 4. Evaluation
def evaluate_bits_per_byte(
    model,
    ids: torch.Tensor,
    block_size: int,
    batch_size: int = 32,
    max_batches: int | None = None,
    bytes_per_token: float = 1.0,
) -> float:
    """Validation loss of a causal LM in bits per byte.

    The text is cut into consecutive windows of ``block_size + 1`` tokens; the model predicts every
    token after the first in each window. With ``max_batches`` only ``max_batches * batch_size``
    windows, evenly spaced over the whole text, are scored (deterministic).

    Parameters
    ----------
    model : causal LM with ``model(input_ids=x).logits`` of shape (B, T, V).
    ids : 1-D integer tensor of token ids.
    block_size : int, context length in tokens (<= the model's max_position_embeddings).
    batch_size : int, windows per forward pass.
    max_batches : int or None (all windows).
    bytes_per_token : float, average UTF-8 bytes per token of the evaluated text: 1.0 for the
        byte tokenizer; ``len(text.encode()) / len(token_ids)`` for a BPE.

    Returns
    -------
    float, bits per byte (lower is better; 8.0 = knowing nothing about bytes, ~1 for strong LLMs on English).
    Perplexity per byte is ``2 ** bpb``.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches!r}")
    if not bytes_per_token > 0:
        raise ValueError(f"bytes_per_token must be > 0, got {bytes_per_token!r}")
    ids = _check_ids(ids, "ids", block_size + 1)
    loss = _mean_loss(model, ids, block_size, batch_size, max_batches)
    return loss / LN2 / bytes_per_token


# ----------------------------------------------------------------------------------------------
# Checkpoints: the model with save_pretrained (safetensors), the rest with torch.save
def save_checkpoint(
    path, model, optimizer, generator: torch.Generator, step: int, history: list[dict]
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (``save_pretrained``) and ``trainer_state.pt``
    (optimizer moments, data RNG state, step, history) so that training can resume exactly."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_pretrained_quietly(model, path)
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "history": history,
        },
        path / "trainer_state.pt",
    )
    return path


def save_pretrained_quietly(model, path) -> None:
    """``model.save_pretrained(path)`` (safetensors) without transformers' "Writing model shards"
    progress bar; used by checkpoints and by ``ddp_train``."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_checkpoint(path, model, optimizer=None, generator: torch.Generator | None = None):
    """Load a :func:`save_checkpoint` folder into ``model`` (and optimizer/generator); returns
    ``(step, history)``."""
    from safetensors.torch import load_file

    path = Path(path)
    weights = path / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"no model.safetensors in {path}: not a checkpoint folder")
    state = load_file(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a tied lm_head is saved once (as the embedding), so it is "missing" here and that is fine
    missing = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit the model: missing {missing}, unexpected {unexpected}"
        )
    trainer = (
        torch.load(path / "trainer_state.pt", weights_only=False)
        if (path / "trainer_state.pt").exists()
        else {}
    )
    if optimizer is not None and "optimizer" in trainer:
        optimizer.load_state_dict(trainer["optimizer"])
    if generator is not None and "generator" in trainer:
        generator.set_state(trainer["generator"])
    return trainer.get("step", 0), list(trainer.get("history", []))


# ----------------------------------------------------------------------------------------------
# 5. The course's trained GPT
# The lesson's default recipe per preset (TrainConfig fields). "small" is what lesson 04 trains
# and what later lessons (quantization, profiling, SHAP, bias) load.
COURSE_RECIPES: dict[str, dict] = {
    "tiny": dict(
        max_steps=300,
        batch_size=16,
        block_size=64,
        learning_rate=3e-3,
        warmup_steps=30,
        eval_interval=100,
        eval_batches=10,
    ),
    "small": dict(
        max_steps=1000,
        batch_size=32,
        block_size=128,
        learning_rate=3e-3,
        warmup_steps=50,
        eval_interval=200,
        eval_batches=16,
    ),
}


def _recipe_key(preset: str, train_cfg: TrainConfig, seed: int) -> str:
    from transformers import __version__ as tf_version

    from .model import make_config

    fields = dataclasses.asdict(train_cfg)
    for volatile in ("progress", "checkpoint_dir", "checkpoint_interval", "resume", "device"):
        fields.pop(volatile)
    blob = json.dumps(
        {
            "model": make_config(preset).to_dict(),
            "train": fields,
            "seed": seed,
            "data": "shakespeare-bytes-v1",
            "transformers": tf_version.split(".")[0],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_course_gpt(
    preset: str = "small",
    max_steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    retrain: bool = False,
):
    """The course's Shakespeare GPT: trained on the byte-level train plays, or loaded from cache.

    The first call trains with ``COURSE_RECIPES[preset]`` (lesson 04's default recipe; "small"
    takes ~5 minutes on 2 CPU cores) and saves the result with ``save_pretrained`` (safetensors)
    under the course cache, keyed by every setting; later calls load it in a second.

    Parameters
    ----------
    preset : str, a key of ``COURSE_RECIPES`` ("tiny" or "small").
    max_steps : int or None, override the recipe's number of steps (fewer = faster, worse model).
    seed : int, initialisation and data-order seed.
    progress : bool, show a tqdm bar while training.
    retrain : bool, ignore the cache and train again.

    Returns
    -------
    model : transformers.LlamaForCausalLM in eval mode (byte-level: use :class:`ByteTokenizer`).
    info : dict with ``preset``, ``max_steps``, ``seed``, ``val_bpb`` (bits per byte on all the
        held-out plays),
        ``train_seconds``, ``parameters``, ``block_size``, ``path`` (cache folder), ``cached``
        (True when loaded rather than trained) and ``history`` (list of dicts).

    Examples
    --------
    >>> model, info = load_course_gpt("tiny", max_steps=20, progress=False)  # doctest: +SKIP
    """
    from transformers import LlamaForCausalLM

    from .model import build_model, count_parameters, make_config
    from .resources import cache_dir

    if preset not in COURSE_RECIPES:
        raise ValueError(f"preset must be one of {sorted(COURSE_RECIPES)}, got {preset!r}")
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1
    ):
        raise ValueError(f"max_steps must be a positive int or None, got {max_steps!r}")
    recipe = dict(COURSE_RECIPES[preset])
    if max_steps is not None:
        recipe["max_steps"] = max_steps
        recipe["warmup_steps"] = min(recipe["warmup_steps"], max(1, max_steps // 10))
        recipe["eval_interval"] = min(recipe["eval_interval"], max_steps)
    cfg = TrainConfig(**recipe, seed=seed, progress=progress)
    key = _recipe_key(preset, cfg, seed)
    folder = cache_dir("course-gpt") / f"{preset}-{cfg.max_steps}steps-seed{seed}-{key}"
    info_file = folder / "course_info.json"
    if info_file.exists() and not retrain:
        model = LlamaForCausalLM.from_pretrained(folder).eval()
        info = json.loads(info_file.read_text())
        return model, {**info, "path": str(folder), "cached": True}

    model = build_model(make_config(preset), seed=seed)
    t0 = time.perf_counter()
    val_ids = shakespeare_bytes("validation")
    history = train(model, shakespeare_bytes("train"), val_ids, cfg)
    seconds = time.perf_counter() - t0
    val_bpb = evaluate_bits_per_byte(model, val_ids, cfg.block_size, cfg.batch_size)  # every held-out byte
    info = {
        "preset": preset,
        "max_steps": cfg.max_steps,
        "seed": seed,
        "val_bpb": val_bpb,
        "train_seconds": seconds,
        "parameters": count_parameters(model),
        "block_size": cfg.block_size,
        "tokenizer": "bytes (course_lib.training.ByteTokenizer)",
        "history": history,
    }
    # write to a temporary folder and rename: a concurrent reader never sees half a model
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained_quietly(model, tmp)
    (tmp / "course_info.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return model.eval(), {**info, "path": str(folder), "cached": False}
