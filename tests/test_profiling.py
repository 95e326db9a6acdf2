"""Unit tests of course_lib.profiling: fast, offline, no absolute timings."""

from __future__ import annotations

import math
import time

import pytest
import torch

from course_lib import profiling as P
from course_lib.model import build_model, count_parameters, make_config


# ------------------------------------------------------------------------------------ benchmark
class FakeAsyncDevice:
    """Work is queued by ``launch`` and only done (slept) by ``sync``, like CUDA kernels."""

    def __init__(self, work_s):
        self.work_s, self.pending, self.launches, self.syncs = work_s, 0, 0, 0

    def launch(self):
        self.launches += 1
        self.pending += 1

    def sync(self):
        self.syncs += 1
        time.sleep(self.work_s * self.pending)
        self.pending = 0


def test_benchmark_counts_calls_and_returns_statistics():
    calls = []
    r = P.benchmark(lambda: calls.append(1), warmup=3, repeat=7)
    assert len(calls) == 10
    assert r.repeat == 7 and r.warmup == 3 and len(r.times_s) == 7
    assert r.median_s == sorted(r.times_s)[3]
    d = r.to_dict()
    assert set(d) >= {"median_s", "iqr_s", "mean_s", "std_s", "min_s", "max_s", "repeat", "warmup"}
    assert "median" in str(r)


def test_benchmark_excludes_warmup_calls():
    n = {"calls": 0}

    def fn():  # the first two calls are slow (compilation, allocator growth, ...)
        n["calls"] += 1
        time.sleep(0.2 if n["calls"] <= 2 else 0.001)

    r = P.benchmark(fn, warmup=2, repeat=3)
    assert r.max_s < 0.2, "a warm-up call was timed"


def test_benchmark_synchronises_before_stopping_the_clock():
    dev = FakeAsyncDevice(work_s=0.03)
    r = P.benchmark(dev.launch, warmup=1, repeat=3, sync=dev.sync)
    assert dev.syncs >= 3
    assert r.min_s >= 0.03, "the clock stopped before the queued work finished"
    # and the warm-up's queued work was not billed to the first timed call
    assert r.times_s[0] < 0.06 + 0.03


def test_benchmark_statistics_by_hand():
    r = P.BenchmarkResult(times_s=[1.0, 2.0, 3.0, 4.0, 100.0], warmup=1)
    assert r.median_s == 3.0 and r.mean_s == 22.0 and r.min_s == 1.0 and r.max_s == 100.0
    assert r.iqr_s == 2.0  # inclusive quartiles 2 and 4
    assert P.BenchmarkResult(times_s=[0.5]).std_s == 0.0


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(fn=42), TypeError),
        (dict(warmup=-1), ValueError),
        (dict(warmup=1.5), ValueError),
        (dict(repeat=0), ValueError),
        (dict(repeat=True), ValueError),
    ],
)
def test_benchmark_rejects_bad_input(kwargs, exc):
    args = dict(fn=lambda: None, warmup=1, repeat=2) | kwargs
    with pytest.raises(exc, match="fn|warmup|repeat"):
        P.benchmark(**args)


# ------------------------------------------------------------------------------------ devices
def test_resolve_device():
    assert P.resolve_device("cpu") == torch.device("cpu")
    assert P.resolve_device(torch.device("cpu")).type == "cpu"
    assert P.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(TypeError, match="device"):
        P.resolve_device(0)
    with pytest.raises(ValueError, match="device"):
        P.resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            P.resolve_device("cuda")
    P.synchronize("cpu")  # a no-op, must not fail


# ------------------------------------------------------------------------------------ FLOPs
def test_flops_per_token_is_palm_formula():
    cfg = make_config("tiny")
    model = build_model(cfg)
    n = count_parameters(model, exclude_embeddings=True)
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    Q = cfg.hidden_size // H
    T = 48
    assert P.flops_per_token(cfg, T) == 6 * n + 12 * L * H * Q * T
    assert P.flops_per_token(cfg, T, training=False) == pytest.approx((6 * n + 12 * L * H * Q * T) / 3)
    # the default context is the config's own
    assert P.flops_per_token(cfg) == P.flops_per_token(cfg, cfg.max_position_embeddings)
    assert P.non_embedding_parameters(cfg) == n


def test_flops_per_token_rejects_bad_input():
    cfg = make_config("tiny")
    with pytest.raises(ValueError, match="seq_len"):
        P.flops_per_token(cfg, 0)
    with pytest.raises(TypeError, match="training"):
        P.flops_per_token(cfg, 8, training="yes")
    with pytest.raises(TypeError, match="config"):
        P.flops_per_token(object())


# ------------------------------------------------------------------------------------ peaks, MFU
@pytest.mark.parametrize(
    "name, key",
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100-PCIE-40GB", "A100"),
        ("NVIDIA L4", "L4"),
        ("Tesla T4", "T4"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA A10", "A10"),
    ],
)
def test_device_key_matches_real_gpu_names(name, key):
    assert P.device_key(name) == key


def test_peak_table_lookups_and_errors():
    assert P.peak_flops("A100", torch.bfloat16) == 312e12
    assert P.peak_flops("H100", "bf16") == pytest.approx(989.5e12)
    assert P.peak_flops("H100", torch.float32) < P.peak_flops("H100", "tf32") < P.peak_flops("H100", "bf16")
    with pytest.raises(ValueError, match="known GPUs"):
        P.peak_flops("Voodoo2", torch.float32)
    with pytest.raises(ValueError, match="T4 has no bfloat16"):
        P.peak_flops("T4", torch.bfloat16)
    with pytest.raises(ValueError, match="dtype"):
        P.peak_flops("A100", torch.int8)
    with pytest.raises(ValueError, match="measured"):
        P.peak_flops("cpu", measure=False)
    with pytest.raises(TypeError, match="name"):
        P.device_key(3)


def test_cpu_peak_is_measured_and_cached():
    first = P.peak_flops("cpu", torch.float32)
    assert first > 1e8  # any CPU does more than 0.1 GFLOP/s on a matmul
    assert P.peak_flops("cpu", torch.float32) == first  # cached per dtype and thread count
    assert P.measure_matmul_flops("cpu", n=64, repeat=2) > 0
    with pytest.raises(ValueError, match="n must be"):
        P.measure_matmul_flops("cpu", n=4)


def test_mfu_formula_and_errors():
    cfg = make_config("gpt2-124m", vocab_size=50304)
    expected = 1e5 * P.flops_per_token(cfg, 1024) / 312e12
    assert P.mfu(1e5, cfg, "A100", torch.bfloat16, seq_len=1024) == pytest.approx(expected)
    assert P.mfu(1e5, cfg, peak=312e12, seq_len=1024) == pytest.approx(expected)
    # inference throughput is judged against forward FLOPs only
    assert P.mfu(1e5, cfg, "A100", "bf16", seq_len=1024, training=False) == pytest.approx(expected / 3)
    for bad in (0, -5.0, float("nan"), True, "fast"):
        with pytest.raises(ValueError, match="tokens_per_s"):
            P.mfu(bad, cfg, "A100", torch.bfloat16)
    with pytest.raises(ValueError, match="peak"):
        P.mfu(1e5, cfg, peak=0)


# ------------------------------------------------------------------------------------ profiler
@pytest.fixture(scope="module")
def tiny_profile():
    from torch.profiler import ProfilerActivity, profile, record_function

    model = build_model(make_config("tiny")).eval()
    x = torch.randint(0, 256, (2, 32))
    with torch.inference_mode():
        model(input_ids=x)  # warm-up outside the profile
        with profile(activities=[ProfilerActivity.CPU], with_flops=True, profile_memory=True) as prof:
            with record_function("forward"):
                model(input_ids=x)
            with record_function("sleepy"):
                time.sleep(0.02)
    return prof


def test_profile_table(tiny_profile):
    df = P.profile_table(tiny_profile, top=None)
    assert {"name", "calls", "self_cpu_ms", "cpu_ms", "self_cpu_pct", "gflops", "region"} <= set(df.columns)
    assert (df["self_cpu_ms"].diff().dropna() <= 0).all()  # sorted, largest first
    assert "aten::mm" in set(df["name"]) or "aten::addmm" in set(df["name"])
    assert df.loc[~df.region, "self_cpu_pct"].sum() == pytest.approx(100)
    regions = P.profile_table(tiny_profile, top=None, regions_only=True, sort_by="cpu_ms")
    assert set(regions["name"]) == {"sleepy", "forward"}
    assert (regions["cpu_ms"].diff().dropna() <= 0).all()
    assert float(regions.set_index("name").loc["sleepy", "cpu_ms"]) >= 20  # it slept 20 ms
    assert len(P.profile_table(tiny_profile, top=3)) == 3
    with pytest.raises(ValueError, match="sort_by"):
        P.profile_table(tiny_profile, sort_by="speed")
    with pytest.raises(TypeError, match="prof"):
        P.profile_table("not a profile")


def test_plot_profile(tiny_profile):
    import matplotlib

    matplotlib.use("Agg")
    df = P.profile_table(tiny_profile, top=None)
    ax = P.plot_profile(df, top=4)
    assert len(ax.patches) == 4
    with pytest.raises(ValueError, match="column"):
        P.plot_profile(df, column="nope")
    assert math.isfinite(df["gflops"].sum())


def test_gpu_check_script_says_it_needs_a_gpu(tmp_path):
    """tools/gpu_check.sh is the one prepared GPU check (#19); on a CPU-only machine it must stop
    at once with a clear message (exit 2), not run the lessons on the CPU and call it a GPU run."""
    import subprocess
    import sys
    from pathlib import Path

    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run bash tools/gpu_check.sh itself")
    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run(
        ["bash", str(repo / "tools" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)},
        timeout=120,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no CUDA device visible" in r.stdout
