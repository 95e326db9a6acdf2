"""Continuous batching for a transformers causal LM: the scheduler behind ``course_lib serve``.

A serving engine turns many independent requests into as few forward passes as it can. This
module is the smallest honest version of what vLLM and TGI do (without paged memory):

- every request becomes a :class:`Sequence` with its own sampling settings and RNG;
- a new sequence is **prefilled** on its own (one forward pass over its whole prompt, which
  fills its KV cache and gives its first token: the time to first token);
- **decode** steps run one forward pass for *all* running sequences at once, one new token
  each: the rows are left-padded into one batched KV cache (``transformers.DynamicCache``)
  with an attention mask over the padding and per-row position ids;
- **continuous batching** admits waiting sequences at every step and retires finished ones
  (EOS, a stop string, ``max_tokens`` or the context length) at every step; **static
  batching** (``batching="static"``) only admits when the whole batch has finished, and with
  ``max_batch_size=1`` it serves one request at a time, the baseline of ``benchmarks/serve.py``.

Greedy output is token-identical to ``model.generate`` for the same prompt, batched or not (up to
float rounding in padded batches, which can flip an exact tie; the tests check real prompts).

Example
-------
>>> import torch
>>> from course_lib.model import build_model, make_config
>>> from course_lib.training import ByteTokenizer
>>> model = build_model(make_config("tiny"), seed=0).eval()
>>> engine = Engine(model, ByteTokenizer(), max_batch_size=4)
>>> seqs = [engine.add(list(b"To be"), SamplingParams(max_tokens=5, temperature=0.0)) for _ in range(3)]
>>> engine.run_until_idle()
>>> [s.finish_reason for s in seqs], len({tuple(s.output_ids) for s in seqs})
(['length', 'length', 'length'], 1)
>>> ref = model.generate(torch.tensor([list(b"To be")]), max_new_tokens=5, do_sample=False)
>>> ref[0, 5:].tolist() == seqs[0].output_ids
True
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ._validation import check_int

__all__ = ["SamplingParams", "Sequence", "TextCodec", "Engine", "kv_cache_bytes_per_token"]

_ids = itertools.count()


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks for (the OpenAI API's names and defaults).

    max_tokens : int >= 1, new tokens at most.
    temperature : float in [0, 2]; 0 means greedy.
    top_p : float in (0, 1], nucleus sampling.
    seed : int or None, seed of this request's own ``torch.Generator``.
    stop : tuple of str, generation ends before the first occurrence of any of them.
    ignore_eos : bool, keep generating past end-of-sequence tokens (vLLM's option for
        benchmarks that need a fixed output length).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self):
        check_int("max_tokens", self.max_tokens, minimum=1)
        if not isinstance(self.temperature, int | float) or not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be a number in [0, 2], got {self.temperature!r}")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if self.seed is not None:
            check_int("seed", self.seed)
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")


@dataclass(eq=False)
class Sequence:
    """One request in flight. Times are ``time.perf_counter()`` seconds.

    ``output_ids`` grows by one token per step; ``text`` is the decoded output, cut before a stop
    string; ``on_event(seq, delta_text, finished)`` is called from the engine's thread after
    every token (``delta_text`` is the new text that is safe to show: it never ends inside a
    possible stop string or a half UTF-8 character).
    """

    prompt_ids: list[int]
    params: SamplingParams
    on_event: Callable | None = None
    id: str = field(default_factory=lambda: f"seq-{next(_ids)}")
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    finish_reason: str | None = None
    arrived_at: float = field(default_factory=time.perf_counter)
    token_times: list[float] = field(default_factory=list)
    aborted: bool = False
    generator: torch.Generator | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class TextCodec:
    """One interface over a Hugging Face tokenizer or the course's :class:`ByteTokenizer`.

    >>> from course_lib.training import ByteTokenizer
    >>> codec = TextCodec(ByteTokenizer())
    >>> codec.encode("Hé"), codec.decode([72, 195, 169]), codec.eos_ids, codec.has_chat_template
    ([72, 195, 169], 'Hé', (), False)
    """

    def __init__(self, tokenizer, eos_ids=None):
        self.tokenizer = tokenizer
        self.is_hf = hasattr(tokenizer, "convert_tokens_to_ids")
        if eos_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None) if self.is_hf else None
            eos_ids = () if eos is None else (eos,)
        self.eos_ids = tuple(sorted({int(i) for i in eos_ids}))
        self.has_chat_template = bool(self.is_hf and getattr(tokenizer, "chat_template", None))

    def encode(self, text: str) -> list[int]:
        if self.is_hf:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return [int(i) for i in self.tokenizer.encode(text).tolist()]

    def decode(self, ids) -> str:
        if self.is_hf:
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        return self.tokenizer.decode(list(ids))

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """The model's own chat template with the assistant turn opened."""
        if not self.has_chat_template:
            raise ValueError("this model's tokenizer has no chat template: use /v1/completions instead")
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return [int(i) for i in out]


def kv_cache_bytes_per_token(config, dtype=torch.float32) -> int:
    """Bytes of KV cache one token occupies: 2 (K and V) x layers x KV heads x head dim x bytes.

    >>> from course_lib.model import make_config
    >>> cfg = make_config("tiny")
    >>> kv_cache_bytes_per_token(cfg) == 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    True
    """
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv * head_dim * torch.empty(0, dtype=dtype).element_size()


def _left_pad(t: torch.Tensor, length: int) -> torch.Tensor:
    """Pad a (B, H, L, D) cache tensor on the left of dim 2 to ``length`` with zeros."""
    return torch.nn.functional.pad(t, (0, 0, length - t.size(2), 0))


def _batch_cache(layers):
    """A ``DynamicCache`` over ``layers`` = [(keys, values)] of shape (B, H, L, D) whose layers
    append in place (see :func:`_slab_layer`)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layers = [_slab_layer(k, v) for k, v in layers]
    return cache


def _slab_layer(keys: torch.Tensor, values: torch.Tensor, spare: int = 64):
    """A cache layer whose keys/values are views of a larger buffer: appending a token writes
    into spare room instead of concatenating (transformers' ``DynamicLayer`` copies the whole
    cache at every step, a quarter of a decode step at batch 8 on a CPU)."""
    from transformers.cache_utils import DynamicLayer

    class SlabLayer(DynamicLayer):
        def __init__(self, keys, values):
            super().__init__()
            self.is_initialized, self.device = True, keys.device
            self._length = keys.size(2)
            self._k = keys.new_empty(*keys.shape[:2], self._length + spare, keys.size(3))
            self._v = values.new_empty(*values.shape[:2], self._length + spare, values.size(3))
            self._k[:, :, : self._length], self._v[:, :, : self._length] = keys, values
            self._views()

        def _views(self):
            self.keys, self.values = self._k[:, :, : self._length], self._v[:, :, : self._length]

        def update(self, key_states, value_states, *args, **kwargs):
            n = key_states.size(2)
            if self._length + n > self._k.size(2):  # out of room: double the buffer
                grow = self._length + n
                self._k = torch.cat(
                    [self._k, self._k.new_empty(*self._k.shape[:2], grow, self._k.size(3))], 2
                )
                self._v = torch.cat(
                    [self._v, self._v.new_empty(*self._v.shape[:2], grow, self._v.size(3))], 2
                )
            self._k[:, :, self._length : self._length + n] = key_states
            self._v[:, :, self._length : self._length + n] = value_states
            self._length += n
            self._views()
            return self.keys, self.values

    return SlabLayer(keys, values)


class Engine:
    """Schedules :class:`Sequence` s over one model; see the module docstring.

    Parameters
    ----------
    model : transformers causal LM (Llama family: the course GPT, SmolLM2, a quantized copy).
    tokenizer : Hugging Face tokenizer or :class:`course_lib.training.ByteTokenizer`.
    max_batch_size : int, running sequences at most (KV cache memory grows with it).
    batching : "continuous" (admit at every step) or "static" (admit when the batch is empty).
    max_context : int or None, tokens per sequence at most (default the model's
        ``max_position_embeddings``).
    eos_ids : iterable of int or None, end-of-sequence tokens (default the tokenizer's EOS and
        the model's ``generation_config.eos_token_id``).
    """

    def __init__(
        self,
        model,
        tokenizer,
        max_batch_size: int = 8,
        batching: str = "continuous",
        max_context=None,
        eos_ids=None,
    ):
        check_int("max_batch_size", max_batch_size, minimum=1)
        if batching not in ("continuous", "static"):
            raise ValueError(f"batching must be 'continuous' or 'static', got {batching!r}")
        self.model = model.eval()
        if eos_ids is None:
            eos_ids = set()
            gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
            eos_ids |= set(
                gen_eos if isinstance(gen_eos, list | tuple) else [] if gen_eos is None else [gen_eos]
            )
            if getattr(tokenizer, "eos_token_id", None) is not None:
                eos_ids.add(tokenizer.eos_token_id)
        self.codec = TextCodec(tokenizer, eos_ids)
        self.max_batch_size = max_batch_size
        self.batching = batching
        self.max_context = int(max_context or model.config.max_position_embeddings)
        self.pad_id = 0
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._cache = None  # DynamicCache of the running batch, rows left-padded
        self._mask = None  # LongTensor (B, L): 1 where the cache holds a real token
        self._inbox: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.stats = {"steps": 0, "decode_tokens": 0, "prefill_tokens": 0, "max_running": 0}

    # --- requests -------------------------------------------------------------------------
    def add(
        self, prompt_ids, params: SamplingParams, on_event=None, request_id: str | None = None
    ) -> Sequence:
        """Queue a request (thread-safe). Raises ValueError for an empty prompt or one that leaves
        no room for ``params.max_tokens`` within ``max_context``."""
        prompt_ids = [int(i) for i in prompt_ids]
        if not prompt_ids:
            raise ValueError("the prompt is empty: send at least one token of text")
        need = len(prompt_ids) + params.max_tokens
        if need > self.max_context:
            raise ValueError(
                f"this model's maximum context length is {self.max_context} tokens, but you requested "
                f"{need} tokens ({len(prompt_ids)} in the prompt, {params.max_tokens} for the completion): "
                "shorten the prompt or lower max_tokens"
            )
        seq = Sequence(prompt_ids, params, on_event)
        if request_id is not None:
            seq.id = request_id
        if params.seed is not None:
            seq.generator = torch.Generator().manual_seed(params.seed)
        self._inbox.put(seq)
        return seq

    def abort(self, seq: Sequence) -> None:
        """Stop generating for ``seq`` at the next step and free its slot (thread-safe)."""
        seq.aborted = True

    @property
    def queued(self) -> int:
        """Requests waiting for a slot (not yet prefilled)."""
        return len(self.waiting) + self._inbox.qsize()

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting and self._inbox.empty()

    # --- one scheduler iteration ----------------------------------------------------------
    @torch.no_grad()
    def step(self) -> int:
        """Admit, prefill the admitted, decode one token for every running sequence, retire.
        Returns the number of sequences still running or waiting."""
        while True:
            try:
                self.waiting.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        self._retire([s for s in self.running if s.aborted], reason="abort")
        self.waiting = deque(s for s in self.waiting if not s.aborted)
        if self.batching == "continuous" or not self.running:
            while self.waiting and len(self.running) < self.max_batch_size:
                self._prefill(self.waiting.popleft())
        if self.running:
            self._decode()
        self.stats["steps"] += 1
        return len(self.running) + len(self.waiting)

    def run_until_idle(self) -> None:
        """Step until every queued request has finished (offline use, tests)."""
        while self.step():
            pass

    def _prefill(self, seq: Sequence) -> None:
        ids = torch.tensor([seq.prompt_ids])
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        self.stats["prefill_tokens"] += ids.size(1)
        self._append_token(seq, out.logits[0, -1])
        if seq.finished:
            return
        layers = [(layer.keys, layer.values) for layer in out.cache.layers]
        mask = torch.ones(1, ids.size(1), dtype=torch.long)
        if self._cache is None:
            self._cache, self._mask = _batch_cache(layers), mask
        else:
            length = max(self._mask.size(1), mask.size(1))
            merged = [
                (
                    torch.cat([_left_pad(old.keys, length), _left_pad(k, length)]),
                    torch.cat([_left_pad(old.values, length), _left_pad(v, length)]),
                )
                for old, (k, v) in zip(self._cache.layers, layers)
            ]
            self._cache = _batch_cache(merged)
            pad = torch.nn.functional.pad
            self._mask = torch.cat(
                [pad(self._mask, (length - self._mask.size(1), 0)), pad(mask, (length - mask.size(1), 0))]
            )
        self.running.append(seq)
        self.stats["max_running"] = max(self.stats["max_running"], len(self.running))

    def _decode(self) -> None:
        last = torch.tensor([[s.output_ids[-1]] for s in self.running])
        positions = self._mask.sum(dim=1, keepdim=True)  # real tokens in the cache = next position
        mask = torch.cat([self._mask, torch.ones_like(positions)], dim=1)
        out = self.model(
            input_ids=last, attention_mask=mask, position_ids=positions, cache=self._cache, use_cache=True
        )
        self._cache, self._mask = out.cache, mask
        self.stats["decode_tokens"] += len(self.running)
        logits = out.logits[:, -1]
        for i, seq in enumerate(self.running):
            self._append_token(seq, logits[i])
        self._retire([s for s in self.running if s.finished])

    def _retire(self, done: list[Sequence], reason: str | None = None) -> None:
        if not done:
            return
        for seq in done:
            if reason is not None and not seq.finished:
                seq.finish_reason = reason
        keep = [i for i, s in enumerate(self.running) if s not in done]
        self.running = [self.running[i] for i in keep]
        if not keep:
            self._cache = self._mask = None
            return
        index = torch.tensor(keep)
        mask = self._mask[index]
        lead = int((mask.cumsum(dim=1) == 0).sum(dim=1).min())  # columns of padding in every row
        self._mask = mask[:, lead:]
        self._cache = _batch_cache(
            [(layer.keys[index, :, lead:], layer.values[index, :, lead:]) for layer in self._cache.layers]
        )

    # --- sampling and text ----------------------------------------------------------------
    def _append_token(self, seq: Sequence, logits: torch.Tensor) -> None:
        from .generation import sample_next_token

        p = seq.params
        top_p = None if p.top_p >= 1 else p.top_p
        token = int(sample_next_token(logits[None].float(), p.temperature, None, top_p, seq.generator)[0])
        seq.output_ids.append(token)
        seq.token_times.append(time.perf_counter())
        if token in self.codec.eos_ids and not p.ignore_eos:
            seq.finish_reason = "stop"
            text = self.codec.decode(seq.output_ids[:-1])
        else:
            text = self.codec.decode(seq.output_ids)
        for stop in p.stop:
            at = text.find(stop, max(0, seq.emitted - len(stop) + 1))
            if at >= 0:
                text, seq.finish_reason = text[:at], "stop"
        if not seq.finished and (
            len(seq.output_ids) >= p.max_tokens
            or len(seq.prompt_ids) + len(seq.output_ids) >= self.max_context
        ):
            seq.finish_reason = "length"
        seq.text = text
        if seq.finished:
            safe = len(text)
        else:
            hold = max((len(s) - 1 for s in p.stop), default=0)
            safe = len(text) - hold
            while safe > seq.emitted and text[safe - 1] == "\ufffd":  # half a UTF-8 character
                safe -= 1
        delta = text[seq.emitted : max(safe, seq.emitted)]
        seq.emitted += len(delta)
        if seq.on_event is not None:
            seq.on_event(seq, delta, seq.finished)

    # --- background thread ----------------------------------------------------------------
    def start(self) -> None:
        """Run the scheduler loop in a daemon thread until :meth:`shutdown`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="course-lib-engine", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.idle:
                try:
                    self.waiting.append(self._inbox.get(timeout=0.05))
                except queue.Empty:
                    continue
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - the failing requests get the error, the server lives
                self.error = exc
                for seq in list(self.running) + list(self.waiting):
                    seq.finish_reason = "error"
                    if seq.on_event is not None:
                        seq.on_event(seq, "", True)
                self.running, self.waiting, self._cache, self._mask = [], deque(), None, None

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
