"""Measuring speed honestly: benchmarks, FLOPs per token, peak FLOP/s per device, MFU, profiles.

The pieces, in the order a measurement uses them::

    resolve_device("auto")             torch.device: cuda if present, else cpu
    benchmark(fn, warmup, repeat)      BenchmarkResult: warm-up, synchronised timings, median/IQR
    flops_per_token(config, seq_len)   PaLM appendix B: 6N + 12*L*H*Q*T (training), 1/3 of it forward
    peak_flops(device, dtype)          a per-device table (H100, A100, L4, T4, ...), or on CPU a peak
                                       measured on the spot with a large matmul
    mfu(tokens_per_s, config, device)  model FLOPs utilisation: achieved FLOP/s / peak FLOP/s
    profile_table(prof)                torch.profiler results as a pandas DataFrame
    plot_profile(table)                the top operators as a horizontal bar chart

Why a table and not one constant: nanoGPT hard-codes the A100's 312 TFLOP/s, which reports
"104% MFU" on an H100. A peak belongs to a (device, dtype) pair, and a CPU has no datasheet
number worth trusting, so there we measure it.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import torch

from .model import flops_per_token, non_embedding_parameters  # one definition, re-exported here
from .plots import COLORS

__all__ = [
    "resolve_device",
    "synchronize",
    "BenchmarkResult",
    "benchmark",
    "non_embedding_parameters",
    "flops_per_token",
    "PEAK_FLOPS",
    "device_key",
    "measure_matmul_flops",
    "peak_flops",
    "mfu",
    "profile_table",
    "plot_profile",
]


# --------------------------------------------------------------------------------------------
# Devices and timing
# --------------------------------------------------------------------------------------------


def resolve_device(device="auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda:0"`` or a ``torch.device`` into a ``torch.device``.

    ``"auto"`` picks CUDA when it is available, else the CPU.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use 'auto' or 'cpu'")
    return dev


def synchronize(device="cpu") -> None:
    """Wait until ``device`` has finished all queued work (a no-op on the CPU).

    CUDA kernels are launched asynchronously: without this, a timer measures the launch, not
    the work.
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


@dataclass
class BenchmarkResult:
    """Timings of ``repeat`` calls, in seconds, after ``warmup`` untimed calls."""

    times_s: list = field(repr=False)
    warmup: int = 0

    @property
    def repeat(self) -> int:
        return len(self.times_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    @property
    def max_s(self) -> float:
        return max(self.times_s)

    @property
    def std_s(self) -> float:
        return statistics.stdev(self.times_s) if len(self.times_s) > 1 else 0.0

    @property
    def iqr_s(self) -> float:
        """Interquartile range: the spread of the middle half, robust to one slow outlier."""
        if len(self.times_s) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.times_s, n=4, method="inclusive")
        return q3 - q1

    def to_dict(self) -> dict:
        keys = ("repeat", "warmup", "median_s", "mean_s", "std_s", "iqr_s", "min_s", "max_s")
        return {k: getattr(self, k) for k in keys}

    def __str__(self) -> str:
        return (
            f"median {self.median_s * 1e3:.3f} ms  (IQR {self.iqr_s * 1e3:.3f} ms, "
            f"min {self.min_s * 1e3:.3f}, max {self.max_s * 1e3:.3f}; "
            f"{self.repeat} runs after {self.warmup} warm-up)"
        )


def benchmark(
    fn: Callable[[], object],
    warmup: int = 3,
    repeat: int = 10,
    device="cpu",
    sync: Callable[[], None] | None = None,
) -> BenchmarkResult:
    """Time ``fn()`` the way it should be timed: warm up, synchronise, repeat, report the median.

    Parameters
    ----------
    fn : callable with no arguments
        The work to time (wrap arguments with ``lambda`` or ``functools.partial``).
    warmup : int >= 0
        Untimed calls first: they pay one-off costs (allocator growth, kernel selection,
        ``torch.compile``, lazy initialisation) that steady state never sees.
    repeat : int >= 1
        Timed calls. Report the median: one slow run (another process, a page fault) moves the
        mean but not the median.
    device : str or torch.device
        Where ``fn`` runs; on CUDA the device is synchronised before the clock starts and
        before it stops.
    sync : callable or None
        Overrides the synchronisation (``None`` -> ``synchronize(device)``).

    Returns
    -------
    BenchmarkResult with ``times_s`` (list of ``repeat`` floats, seconds), ``median_s``,
    ``iqr_s``, ``mean_s``, ``std_s``, ``min_s``, ``max_s`` and ``to_dict()``.

    >>> r = benchmark(lambda: sum(range(1000)), warmup=1, repeat=5)
    >>> r.repeat
    5
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable taking no arguments, got {type(fn).__name__}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
    if sync is None:
        dev = resolve_device(device)

        def sync():
            synchronize(dev)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()  # stop the clock only when the device has really finished
        times.append(time.perf_counter() - start)
    return BenchmarkResult(times_s=times, warmup=warmup)


# --------------------------------------------------------------------------------------------
# FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B)
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Peak FLOP/s: a datasheet table for GPUs, a measurement on CPUs
# --------------------------------------------------------------------------------------------

# Dense (no 2:4 sparsity) peaks from NVIDIA's datasheets, FLOP/s. "float32" is the plain FP32
# (CUDA core) rate; "tfloat32" applies when torch.backends.cuda.matmul.allow_tf32 is on.
# Order matters for matching: more specific names first.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"float32": 67e12, "tfloat32": 494.5e12, "bfloat16": 989.5e12, "float16": 989.5e12},
    "H100 NVL": {"float32": 60e12, "tfloat32": 417.5e12, "bfloat16": 835e12, "float16": 835e12},
    "H100 PCIe": {"float32": 51.2e12, "tfloat32": 378e12, "bfloat16": 756e12, "float16": 756e12},
    "H100": {"float32": 67e12, "tfloat32": 494.5e12, "bfloat16": 989.5e12, "float16": 989.5e12},
    "A100": {"float32": 19.5e12, "tfloat32": 156e12, "bfloat16": 312e12, "float16": 312e12},
    "L40S": {"float32": 91.6e12, "tfloat32": 183e12, "bfloat16": 362e12, "float16": 362e12},
    "A10": {"float32": 31.2e12, "tfloat32": 62.5e12, "bfloat16": 125e12, "float16": 125e12},
    "L4": {"float32": 30.3e12, "tfloat32": 60e12, "bfloat16": 121e12, "float16": 121e12},
    "RTX 4090": {"float32": 82.6e12, "tfloat32": 82.6e12, "bfloat16": 165.2e12, "float16": 165.2e12},
    "RTX 3090": {"float32": 35.6e12, "tfloat32": 35.6e12, "bfloat16": 71e12, "float16": 71e12},
    "V100": {"float32": 15.7e12, "float16": 125e12},
    "T4": {"float32": 8.1e12, "float16": 65e12},
}

_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "tfloat32": "tfloat32",
    "tf32": "tfloat32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def _dtype_name(dtype) -> str:
    try:
        return _DTYPE_NAMES[dtype]
    except (KeyError, TypeError):
        raise ValueError(
            f"dtype must be one of torch.float32, torch.bfloat16, torch.float16 or 'tf32', got {dtype!r}"
        ) from None


def device_key(name: str) -> str:
    """Match a GPU name (``torch.cuda.get_device_name()``) or a short name to a PEAK_FLOPS key.

    >>> device_key("NVIDIA A100-SXM4-80GB")
    'A100'
    >>> device_key("Tesla T4")
    'T4'
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    norm = re.sub(r"[-_]", " ", name).upper()
    for key in PEAK_FLOPS:
        if re.search(r"(^|\s)" + re.escape(key.upper()) + r"(\s|$)", norm):
            return key
    raise ValueError(
        f"unknown device {name!r}: known GPUs are {', '.join(PEAK_FLOPS)}. "
        f"Pass peak=... (FLOP/s from your datasheet) or measure=True."
    )


def measure_matmul_flops(
    device="cpu",
    dtype=torch.float32,
    n: int | None = None,
    repeat: int = 5,
    max_n: int = 2048,
    target_s: float = 0.1,
) -> float:
    """Best FLOP/s of an ``n x n`` by ``n x n`` matmul (``2 n^3`` FLOPs) on ``device``.

    The best of ``repeat`` runs estimates what the hardware can do for this dtype with the
    current thread count: a large square matmul is the most favourable workload there is.
    With ``n=None`` the size starts at 256 and doubles (up to ``max_n``) while one matmul
    takes less than ``target_s`` seconds (bigger matmuls amortise per-call overheads), so a dtype the hardware emulates slowly (bfloat16 on a CPU
    without AVX512-BF16/AMX) is measured in about a second instead of minutes.

    >>> measure_matmul_flops("cpu", n=64, repeat=2) > 0
    True
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 16):
        raise ValueError(f"n must be None or an int >= 16, got {n!r}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
    dev = resolve_device(device)
    g = torch.Generator(device="cpu").manual_seed(0)

    def run(size, reps):
        a = torch.randn(size, size, generator=g).to(device=dev, dtype=dtype)
        b = torch.randn(size, size, generator=g).to(device=dev, dtype=dtype)
        return benchmark(lambda: torch.mm(a, b), warmup=1, repeat=reps, device=dev).min_s

    if n is None:
        n = 256
        while n < max_n and run(n, 1) < target_s:
            n *= 2
    return 2 * n**3 / run(n, repeat)


@lru_cache(maxsize=None)
def _measured_peak(device_str: str, dtype_name: str, threads: int) -> float:
    dtype = {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "tfloat32": torch.float32,
    }[dtype_name]
    return measure_matmul_flops(device_str, dtype)


def peak_flops(device="cpu", dtype=torch.float32, measure: bool | None = None) -> float:
    """Peak FLOP/s of ``device`` for matmuls in ``dtype``.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"auto"``, or a PEAK_FLOPS name (``"H100"``, ``"A100"``, ``"T4"``)
        to look up a GPU you do not have.
    dtype : torch.dtype or str
        ``torch.float32``, ``torch.bfloat16``, ``torch.float16`` or ``"tf32"``.
    measure : bool or None
        ``None`` (default): measure on CPU (cached per dtype and thread count), look up the
        table for GPUs. ``True``: measure on any real device. ``False``: table only.

    Returns
    -------
    float, FLOP/s.

    >>> peak_flops("A100", torch.bfloat16)
    312000000000000.0
    """
    dtype_name = _dtype_name(dtype)
    if isinstance(device, str) and device not in ("auto", "cpu", "mps") and not device.startswith("cuda"):
        key = device_key(device)
        return _table_peak(key, dtype_name)
    dev = resolve_device(device)
    if dev.type == "cpu" and measure is False:
        raise ValueError("a CPU has no table entry: its peak is measured, use measure=None or True")
    if dev.type == "cpu" or measure:
        return _measured_peak(str(dev), dtype_name, torch.get_num_threads())
    if dev.type == "cuda":
        return _table_peak(device_key(torch.cuda.get_device_name(dev)), dtype_name)
    raise ValueError(f"no peak table for device type {dev.type!r}; use measure=True")


def _table_peak(key: str, dtype_name: str) -> float:
    table = PEAK_FLOPS[key]
    if dtype_name not in table:
        raise ValueError(
            f"{key} has no {dtype_name} tensor-core peak in PEAK_FLOPS (it supports {', '.join(table)})"
        )
    return float(table[dtype_name])


def mfu(
    tokens_per_s: float,
    config,
    device="cpu",
    dtype=torch.float32,
    seq_len: int | None = None,
    training: bool = True,
    peak: float | None = None,
) -> float:
    """Model FLOPs utilisation: ``tokens_per_s * flops_per_token / peak_flops``, a fraction.

    Parameters
    ----------
    tokens_per_s : float > 0
        Measured throughput (tokens per second, all devices together).
    config : transformers config of the model
    device, dtype : where and in what precision it ran (see ``peak_flops``).
    seq_len : int or None
        Context length used in the run (default: the config's maximum).
    training : bool
        Whether the throughput is of training steps (forward + backward) or forward only.
    peak : float or None
        Override the peak FLOP/s (e.g. a number from your own datasheet).

    Returns
    -------
    float in (0, ~1]: 0.45 means 45% of the peak.

    >>> from course_lib.model import make_config
    >>> cfg = make_config("gpt2-124m", vocab_size=50304)
    >>> round(mfu(300_000, cfg, "A100", torch.bfloat16, seq_len=1024), 2)
    0.6
    """
    if (
        isinstance(tokens_per_s, bool)
        or not isinstance(tokens_per_s, (int, float))
        or not math.isfinite(tokens_per_s)
        or tokens_per_s <= 0
    ):
        raise ValueError(f"tokens_per_s must be a positive finite number, got {tokens_per_s!r}")
    if peak is None:
        peak = peak_flops(device, dtype)
    elif not isinstance(peak, (int, float)) or not peak > 0:
        raise ValueError(f"peak must be a positive number of FLOP/s, got {peak!r}")
    return tokens_per_s * flops_per_token(config, seq_len, training=training) / peak


# --------------------------------------------------------------------------------------------
# torch.profiler results as tables and plots
# --------------------------------------------------------------------------------------------


def profile_table(prof, top: int | None = 15, sort_by: str = "self_cpu_ms", regions_only: bool = False):
    """``prof.key_averages()`` as a pandas DataFrame, one row per operator or region.

    Columns: ``name``, ``calls``, ``self_cpu_ms``, ``cpu_ms`` (including children),
    ``self_cpu_pct`` (share of all self CPU time), ``device_ms`` and ``self_device_ms``
    (CUDA, 0 on CPU), ``gflops`` (only for ops the profiler counts when ``with_flops=True``:
    mm/addmm/bmm/mul/add; CPU attention kernels report none) and ``self_cpu_mem_mb``
    (with ``profile_memory=True``).

    Parameters
    ----------
    prof : torch.profiler.profile, after the ``with`` block
    top : int or None
        Keep the first ``top`` rows after sorting (None keeps all).
    sort_by : str
        A column name.
    regions_only : bool
        Keep only ``record_function`` regions (user annotations), not ``aten::`` ops.
    """
    import pandas as pd

    if not hasattr(prof, "key_averages"):
        raise TypeError(f"prof must be a finished torch.profiler.profile, got {type(prof).__name__}")
    rows = []
    for e in prof.key_averages():
        is_region = e.key.startswith("## ") or getattr(e, "is_user_annotation", False)
        if e.key.startswith("ProfilerStep"):
            continue
        rows.append(
            {
                "name": e.key,
                "calls": e.count,
                "self_cpu_ms": e.self_cpu_time_total / 1e3,
                "cpu_ms": e.cpu_time_total / 1e3,
                "self_device_ms": getattr(e, "self_device_time_total", 0) / 1e3,
                "device_ms": getattr(e, "device_time_total", 0) / 1e3,
                "gflops": (e.flops or 0) / 1e9,
                "self_cpu_mem_mb": (getattr(e, "self_cpu_memory_usage", 0) or 0) / 2**20,
                "region": bool(is_region),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    total_self = df.loc[~df.region, "self_cpu_ms"].sum() or 1.0
    df["self_cpu_pct"] = 100 * df["self_cpu_ms"] / total_self
    if regions_only:
        df = df[df.region]
    if sort_by not in df.columns:
        raise ValueError(f"sort_by must be one of {list(df.columns)}, got {sort_by!r}")
    df = df.sort_values(sort_by, ascending=False).reset_index(drop=True)
    return df.head(top) if top is not None else df


_COLUMN_LABELS = {
    "self_cpu_ms": "self CPU time [ms]",
    "cpu_ms": "CPU time incl. children [ms]",
    "self_device_ms": "self GPU time [ms]",
    "device_ms": "GPU time incl. children [ms]",
    "self_cpu_pct": "share of self CPU time [%]",
    "gflops": "counted FLOPs [GFLOP]",
    "self_cpu_mem_mb": "self CPU memory [MiB]",
    "calls": "calls",
}


def plot_profile(table, column: str = "self_cpu_ms", top: int = 10, ax=None, title: str | None = None):
    """Horizontal bar chart of the ``top`` rows of a ``profile_table`` by ``column``; returns ax."""
    import matplotlib.pyplot as plt

    if column not in table.columns:
        raise ValueError(f"column must be one of {list(table.columns)}, got {column!r}")
    data = table.sort_values(column, ascending=False).head(top)[::-1]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.35 * len(data) + 1))
    ax.barh(data["name"], data[column], color=COLORS[0])
    ax.set_xlabel(_COLUMN_LABELS.get(column, column))
    ax.set_title(title or f"where the time goes (top {len(data)} by {column})")
    return ax
