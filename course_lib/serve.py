"""An OpenAI-compatible HTTP server for the course's models: ``python -m course_lib serve``.

FastAPI + uvicorn in front of :class:`course_lib.engine.Engine` (continuous batching):

- ``GET /health``: 200 once the model is loaded (no API key needed: probes use it);
- ``GET /v1/models``: the one model served;
- ``POST /v1/completions``: a text (or token-id) prompt;
- ``POST /v1/chat/completions``: messages through the model's own chat template;
- ``stream: true`` sends server-sent events (``data: {chunk}`` ... ``data: [DONE]``) as the
  official ``openai`` client expects; ``max_tokens``, ``temperature``, ``top_p``, ``stop`` and
  ``seed`` mean what they mean in the OpenAI API.

Bad requests get OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}`` with
status 400/401/404/429, never a traceback; a client that disconnects frees its slot at the next
step. Optional protection for an exposed endpoint: an API key (``--api-key`` or the
``OPEN_LLM_LAB_API_KEY`` environment variable), a cap on waiting requests (429 when full) and
the model's context length as the prompt size limit.

Example (in a notebook or test; the server runs in a child process on a free localhost port)
------------------------------------------------------------------------------------------
>>> with ServerProcess("smollm2") as server:  # doctest: +SKIP
...     from openai import OpenAI
...     client = OpenAI(base_url=server.base_url + "/v1", api_key="unused")
...     client.completions.create(model="smollm2", prompt="The sea", max_tokens=5).choices[0].text
"""

# no `from __future__ import annotations` here: FastAPI reads the request models' annotations at
# run time, and they are defined inside create_app (so importing this module stays light).
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"  # localhost only unless asked (the container passes --host 0.0.0.0)
DEFAULT_PORT = 8000
HEALTH_PATH = "/health"
DEFAULT_MODEL = "smollm2"
API_KEY_ENV = "OPEN_LLM_LAB_API_KEY"
DEFAULT_MAX_TOKENS = 16  # the OpenAI completions default
DEFAULT_CHAT_MAX_TOKENS = 256

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HEALTH_PATH",
    "DEFAULT_MODEL",
    "API_KEY_ENV",
    "load_serving_model",
    "create_app",
    "serve",
    "free_port",
    "ServerProcess",
]


def load_serving_model(spec: str = DEFAULT_MODEL, quantize: str | None = None):
    """``(name, model, tokenizer)`` for ``spec``: "smollm2" (SmolLM2-135M-Instruct, offline copy),
    "course-gpt" (lesson 04's Shakespeare GPT, trained once into the course cache, byte-level) or
    the path of a ``save_pretrained`` folder (its tokenizer files, else bytes when the vocabulary
    has 256 entries). ``quantize`` = "int8" or "int4" swaps every linear layer for lesson 06's
    ``QuantizedLinear`` (int4 in groups of 64)."""
    from .training import ByteTokenizer

    if quantize not in (None, "int8", "int4"):
        raise ValueError(f"quantize must be None, 'int8' or 'int4', got {quantize!r}")
    if spec == "smollm2":
        from .data import load_smollm2

        tokenizer, model = load_smollm2()
        name = "smollm2"
    elif spec == "course-gpt":
        from .training import load_course_gpt

        model, _ = load_course_gpt("small")
        tokenizer, name = ByteTokenizer(), "course-gpt"
    else:
        path = Path(spec).expanduser()
        if not (path / "config.json").is_file():
            raise ValueError(
                f"--model must be 'smollm2', 'course-gpt' or a folder written by save_pretrained "
                f"(with a config.json); got {spec!r}"
            )
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path).eval()
        if (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(path)
        elif model.config.vocab_size == 256:
            tokenizer = ByteTokenizer()
        else:
            raise ValueError(
                f"{path} has no tokenizer files and a {model.config.vocab_size}-token vocabulary: "
                "save the tokenizer next to the model (tokenizer.save_pretrained(path))"
            )
        name = path.name
    if quantize is not None:
        from .quantization import quantize_model

        bits, group = (8, "channel") if quantize == "int8" else (4, 64)
        model = quantize_model(model, bits=bits, group_size=group, inplace=True)
        from .adapt import release_free_memory

        release_free_memory()  # hand the freed float32 weights back to the OS
        name = f"{name}-{quantize}"
    return name, model.eval(), tokenizer


# --- the HTTP layer ------------------------------------------------------------------------


def _error(status: int, message: str, kind: str = "invalid_request_error", param=None, code=None):
    from fastapi.responses import JSONResponse

    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


class _RequestError(Exception):
    def __init__(self, status: int, message: str, param=None, code=None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def _validation_message(errors) -> tuple[str, str | None]:
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return (
            'the request body is not valid JSON: send a JSON object, e.g. {"model": ..., "prompt": ...}',
            None,
        )
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request")
    return (f"{param}: {msg}" if param else msg), param


def create_app(engine, model_name: str, api_key: str | None = None, max_waiting: int = 256):
    """The FastAPI application serving ``engine`` under ``model_name``; starts and stops the
    engine's thread with the app. See the module docstring for the routes."""
    from contextlib import asynccontextmanager
    from typing import Literal

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field

    from .engine import SamplingParams

    class _Common(BaseModel):
        model_config = ConfigDict(extra="allow")  # unknown OpenAI options are ignored
        model: str
        max_tokens: int | None = None
        temperature: float = Field(1.0, ge=0, le=2)
        top_p: float = Field(1.0, gt=0, le=1)
        stop: str | list[str] | None = None
        seed: int | None = None
        stream: bool = False
        n: int = 1
        ignore_eos: bool = False  # vLLM's extension, for benchmarks with a fixed output length

    class CompletionRequest(_Common):
        prompt: str | list[int]
        echo: bool = False
        logprobs: int | None = None

    class Message(BaseModel):
        model_config = ConfigDict(extra="allow")
        role: Literal["system", "user", "assistant"]
        content: str

    class ChatRequest(_Common):
        messages: list[Message] = Field(min_length=1)
        max_completion_tokens: int | None = None

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            engine.shutdown()

    app = FastAPI(title="Open LLM Lab inference server", lifespan=lifespan)
    from .quantization import model_nbytes

    weights_mib = round(model_nbytes(engine.model) / 2**20, 1)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request, exc):
        message, param = _validation_message(exc.errors())
        return _error(400, message, param=param)

    @app.exception_handler(_RequestError)
    async def _request_error(request, exc):
        return _error(exc.status, exc.message, exc.kind, exc.param, exc.code)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return _error(
                    401,
                    "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    "invalid_request_error",
                    code="invalid_api_key",
                )
        return await call_next(request)

    @app.get(HEALTH_PATH)
    async def health():
        return {
            "status": "ok",
            "model": model_name,
            "running": len(engine.running),
            "waiting": engine.queued,
            "batching": engine.batching,
            "max_batch_size": engine.max_batch_size,
            "weights_mib": weights_mib,
        }

    @app.get("/v1/models")
    async def models():
        entry = {"id": model_name, "object": "model", "created": 0, "owned_by": "open-llm-lab"}
        return {"object": "list", "data": [entry]}

    def _params(req, max_tokens, default) -> SamplingParams:
        if req.model != model_name:
            raise _RequestError(
                404,
                f"the model {req.model!r} does not exist here: this server serves {model_name!r}",
                "model",
                "model_not_found",
            )
        if req.n != 1:
            raise _RequestError(400, "n must be 1 on this server: send n separate requests", "n")
        max_tokens = default if max_tokens is None else max_tokens
        if max_tokens < 1:
            raise _RequestError(400, f"max_tokens must be at least 1, got {max_tokens}", "max_tokens")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stop) > 4 or not all(stop):
            raise _RequestError(400, "stop must be at most 4 non-empty strings", "stop")
        return SamplingParams(max_tokens, req.temperature, req.top_p, req.seed, tuple(stop), req.ignore_eos)

    def _submit(prompt_ids, params):
        if engine.queued >= max_waiting:
            raise _RequestError(
                429,
                "the server is busy (too many waiting requests): retry later",
                code="rate_limit_exceeded",
                kind="rate_limit_error",
            )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_event(seq, delta, finished):
            loop.call_soon_threadsafe(events.put_nowait, (delta, finished))

        try:
            seq = engine.add(prompt_ids, params, on_event)
        except ValueError as e:
            code = "context_length_exceeded" if "context length" in str(e) else None
            raise _RequestError(400, str(e), "messages" if code else None, code) from None
        return seq, events

    def _usage(seq):
        n_out = len(seq.output_ids)
        return {
            "prompt_tokens": len(seq.prompt_ids),
            "completion_tokens": n_out,
            "total_tokens": len(seq.prompt_ids) + n_out,
        }

    async def _collect(request, seq, events):
        while True:
            try:
                _, finished = await asyncio.wait_for(events.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    engine.abort(seq)
                    raise _RequestError(499, "client closed the request") from None
                continue
            if finished:
                break
        if seq.finish_reason == "error":
            raise _RequestError(
                500, f"the model failed on this request: {engine.error!r}", kind="server_error"
            )

    def _stream(seq, events, chunk, include_usage: bool):
        async def body():
            try:
                first = True
                while True:
                    delta, finished = await events.get()
                    if delta or first or finished:
                        reason = seq.finish_reason if finished else None
                        yield "data: " + json.dumps(chunk(delta, reason, first)) + "\n\n"
                        first = False
                    if finished:
                        break
                if include_usage:
                    final = chunk("", None, False)
                    final["choices"], final["usage"] = [], _usage(seq)
                    yield "data: " + json.dumps(final) + "\n\n"
                yield "data: [DONE]\n\n"
            finally:
                if not seq.finished:
                    engine.abort(seq)  # the client went away mid-stream: free the slot

        return StreamingResponse(body(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        if req.echo or req.logprobs:
            raise _RequestError(400, "echo and logprobs are not supported by this server", "logprobs")
        params = _params(req, req.max_tokens, DEFAULT_MAX_TOKENS)
        if isinstance(req.prompt, str):
            if not req.prompt:
                raise _RequestError(400, "prompt is empty: send some text", "prompt")
            prompt_ids = engine.codec.encode(req.prompt)
        else:
            vocab = engine.model.config.vocab_size
            if not req.prompt or not all(0 <= i < vocab for i in req.prompt):
                raise _RequestError(
                    400, f"a token-id prompt must be a non-empty list of ids in [0, {vocab})", "prompt"
                )
            prompt_ids = list(req.prompt)
        seq, events = _submit(prompt_ids, params)
        rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(text, reason, first):
            choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": model_name,
                "choices": [choice],
            }

        if req.stream:
            options = getattr(req, "stream_options", None) or {}
            return _stream(seq, events, chunk, bool(options.get("include_usage")))
        await _collect(request, seq, events)
        body = chunk(seq.text, seq.finish_reason, True)
        body["usage"] = _usage(seq)
        return body

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request):
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        params = _params(req, max_tokens, DEFAULT_CHAT_MAX_TOKENS)
        try:
            prompt_ids = engine.codec.chat_ids([{"role": m.role, "content": m.content} for m in req.messages])
        except ValueError as e:
            raise _RequestError(400, str(e), "messages") from None
        seq, events = _submit(prompt_ids, params)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(text, reason, first):
            delta = ({"role": "assistant"} if first else {}) | ({"content": text} if text or first else {})
            choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
            return {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_name,
                "choices": [choice],
            }

        if req.stream:
            options = getattr(req, "stream_options", None) or {}
            return _stream(seq, events, chunk, bool(options.get("include_usage")))
        await _collect(request, seq, events)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": seq.text},
            "finish_reason": seq.finish_reason,
            "logprobs": None,
        }
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model_name,
            "choices": [choice],
            "usage": _usage(seq),
        }

    return app


def serve(
    model: str = DEFAULT_MODEL,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_batch_size: int = 8,
    batching: str = "continuous",
    quantize: str | None = None,
    api_key: str | None = None,
    max_context: int | None = None,
    max_waiting: int = 256,
) -> None:
    """Load ``model`` and serve it until interrupted (what ``python -m course_lib serve`` runs)."""
    import uvicorn

    from .engine import Engine

    name, lm, tokenizer = load_serving_model(model, quantize)
    engine = Engine(lm, tokenizer, max_batch_size=max_batch_size, batching=batching, max_context=max_context)
    app = create_app(
        engine, name, api_key=api_key or os.environ.get(API_KEY_ENV) or None, max_waiting=max_waiting
    )
    print(
        f"[serve] {name} ({batching} batching, up to {max_batch_size} sequences) on http://{host}:{port}",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")


# --- a server in a child process, for notebooks, tests and benchmarks -----------------------


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port nobody listens on right now.

    >>> 1024 <= free_port() < 65536
    True
    """
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m course_lib serve ...`` in a child process on a free localhost port.

    Use as a context manager (or call :meth:`start` / :meth:`stop`); ``base_url`` is
    ``http://127.0.0.1:PORT``. ``start`` waits until ``/health`` answers (model loaded) and
    raises RuntimeError with the server's last output if it exits or times out first.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, timeout_s: float = 180.0, env=None, **options):
        self.model, self.timeout_s, self.options = model, timeout_s, options
        self.env = {**os.environ, **(env or {})}
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://{DEFAULT_HOST}:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "course_lib", "serve", "--model", self.model, "--port", str(self.port)]
        for key, value in self.options.items():
            if value is not None:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        return cmd

    def start(self) -> "ServerProcess":
        import tempfile
        import urllib.request

        self.port = free_port()
        fd, log = tempfile.mkstemp(prefix="course-lib-serve-", suffix=".log")
        self.log_path = Path(log)
        with os.fdopen(fd, "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.base_url + HEALTH_PATH, timeout=2) as r:  # noqa: S310 - localhost
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the server did not answer {HEALTH_PATH} within {self.timeout_s:.0f} s:\n{self.log()}"
        )

    def log(self, tail: int = 4000) -> str:
        return (
            self.log_path.read_text(errors="replace")[-tail:]
            if self.log_path and self.log_path.exists()
            else ""
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
