"""Load testing an OpenAI-compatible server, and the latency figures serving engineers report.

- :func:`request_latencies`: time to first token (TTFT), time per output token after the first
  (TPOT) and end-to-end latency of one request, from its timestamps (the definitions of vLLM's
  ``benchmark_serving.py``);
- :func:`summarize`: percentiles over requests, output tokens/s and requests/s of a run;
- :func:`run_load`: N streaming requests at a fixed concurrency with ``httpx`` (localhost only,
  bounded), each timestamped per server-sent event.

Example
-------
>>> lat = request_latencies(10.0, [10.5, 10.6, 10.8])
>>> round(lat["ttft"], 3), round(lat["tpot"], 3), round(lat["e2e"], 3), lat["n_tokens"]
(0.5, 0.15, 0.8, 3)
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

__all__ = ["RequestRecord", "request_latencies", "summarize", "run_load", "percentile", "percentile_ci"]


@dataclass
class RequestRecord:
    """One request of a load test. Times are ``time.perf_counter()`` seconds; ``token_times`` has
    one entry per output token (chunks that carried several tokens are spread over their
    arrival: the token count comes from the usage the server reports)."""

    sent_at: float
    token_times: list[float] = field(default_factory=list)
    error: str | None = None


def percentile(values, q: float) -> float:
    """numpy's linear-interpolation percentile of the non-nan ``values`` (nan if there are none).

    >>> percentile([1.0, 2.0, 3.0, float("nan")], 50)
    2.0
    """
    import numpy as np

    finite = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.percentile(finite, q)) if finite else float("nan")


def percentile_ci(
    values, q: float, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the ``q``-th percentile of the non-nan ``values`` (one per
    request): how much the figure could move on another run of as many requests.

    >>> low, high = percentile_ci(list(range(100)), 50, n_boot=200)
    >>> low < 49.5 < high
    True
    """
    import numpy as np

    finite = np.array([float(v) for v in values if not math.isnan(float(v))])
    if finite.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = np.percentile(rng.choice(finite, size=(n_boot, finite.size)), q, axis=1)
    return float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))


def request_latencies(sent_at: float, token_times) -> dict:
    """``{"ttft", "tpot", "e2e", "n_tokens"}`` in seconds for one request.

    ttft = first token - sent; tpot = (last - first) / (n - 1), nan for a single token (there is
    no gap to measure); e2e = last token - sent.

    >>> request_latencies(0.0, [0.2])["tpot"]
    nan
    """
    times = [float(t) for t in token_times]
    if not times:
        raise ValueError("token_times is empty: a request that produced no token has no latency")
    if any(b < a for a, b in zip(times, times[1:])) or times[0] < sent_at:
        raise ValueError("token_times must be sorted and not earlier than sent_at")
    n = len(times)
    tpot = (times[-1] - times[0]) / (n - 1) if n > 1 else float("nan")
    return {"ttft": times[0] - sent_at, "tpot": tpot, "e2e": times[-1] - sent_at, "n_tokens": n}


def summarize(records, duration_s: float) -> dict:
    """Figures of one load-test run: percentiles over successful requests (ms), throughput over
    the wall ``duration_s``, and the number of failed requests.

    >>> recs = [RequestRecord(0.0, [0.1, 0.2, 0.3]), RequestRecord(0.0, error="boom")]
    >>> s = summarize(recs, duration_s=1.0)
    >>> s["errors"], s["output_tokens_per_s"], round(s["ttft_p50_ms"], 1)
    (1, 3.0, 100.0)
    """
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
    ok = [r for r in records if r.error is None and r.token_times]
    lats = [request_latencies(r.sent_at, r.token_times) for r in ok]
    out = {"requests": len(records), "errors": len(records) - len(ok)}
    for key in ("ttft", "tpot", "e2e"):
        values = [lat[key] * 1000 for lat in lats]
        out[f"{key}_p50_ms"], out[f"{key}_p95_ms"] = percentile(values, 50), percentile(values, 95)
    out["output_tokens_per_s"] = sum(lat["n_tokens"] for lat in lats) / duration_s
    out["requests_per_s"] = len(ok) / duration_s
    return out


def _check_local(base_url: str) -> None:
    host = urlparse(base_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"run_load only targets a server on this machine (localhost), got {base_url!r}")


async def _one(client, url: str, payload: dict, record: RequestRecord) -> None:
    chunk_times, n_tokens = [], None
    try:
        async with client.stream("POST", url, json=payload) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                record.error = f"HTTP {response.status_code}: {body[:200]}"
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    n_tokens = chunk["usage"]["completion_tokens"]
                if chunk.get("choices"):
                    chunk_times.append(time.perf_counter())
    except Exception as exc:  # noqa: BLE001 - a load test counts failures instead of stopping
        record.error = f"{type(exc).__name__}: {exc}"
        return
    if not chunk_times:
        record.error = "no tokens received"
        return
    n = n_tokens or len(chunk_times)
    # spread the tokens over the chunks that carried them (the first chunk is the first token)
    if n == len(chunk_times):
        record.token_times = chunk_times
    else:
        first, last = chunk_times[0], chunk_times[-1]
        record.token_times = [first + (last - first) * i / max(n - 1, 1) for i in range(n)]


async def _run(base_url, payloads, concurrency, timeout_s, progress, headers):
    import httpx

    sem = asyncio.Semaphore(concurrency)
    records = [RequestRecord(0.0) for _ in payloads]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(payloads), desc=f"concurrency {concurrency}", leave=False)

    async def worker(i, payload):
        async with sem:
            records[i].sent_at = time.perf_counter()
            await _one(client, base_url + "/v1/completions", payload, records[i])
            if bar is not None:
                bar.update(1)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, headers=headers) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i, p) for i, p in enumerate(payloads)))
        duration = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return records, duration


def run_load(
    base_url: str,
    prompts,
    model: str,
    concurrency: int = 8,
    max_tokens: int = 32,
    timeout_s: float = 300.0,
    progress: bool = False,
    api_key: str | None = None,
    **sampling,
) -> tuple[list[RequestRecord], float]:
    """Send one streaming ``/v1/completions`` request per prompt, ``concurrency`` at a time.

    Returns ``(records, duration_s)`` for :func:`summarize`. ``sampling`` adds request fields
    (e.g. ``temperature=0``); ``api_key`` is sent as ``Authorization: Bearer``. Works inside a running event loop too (Jupyter): it then runs in
    a worker thread.
    """
    from ._validation import check_int

    _check_local(base_url)
    check_int("concurrency", concurrency, minimum=1, maximum=256)
    prompts = list(prompts)
    if not prompts or len(prompts) > 10_000:
        raise ValueError(f"give between 1 and 10,000 prompts, got {len(prompts)}")
    payloads = [
        {
            "model": model,
            "prompt": p,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        | sampling
        for p in prompts
    ]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    coro = _run(base_url.rstrip("/"), payloads, concurrency, timeout_s, progress, headers)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
