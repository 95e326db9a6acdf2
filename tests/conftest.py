"""Shared test setup: everything runs offline, quietly, from the repository root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The course must work with no hub at all; make any accidental download fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


# Headless Chromium for the browser tests: no GPU, no first-run UI, no background traffic.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-default-apps",
    "--mute-audio",
]


def chromium_executable() -> str:
    """Path of Debian's chromium, installing it with apt-get when missing (root only);
    skips the calling test, with the reason, when neither is possible."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            "chromium is not installed and cannot be installed here "
            "(needs root and apt-get): sudo apt-get install chromium"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.skip(f"could not install chromium ({' '.join(cmd)} failed): {r.stderr[-500:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but no chromium executable is on PATH")
    return found


@pytest.fixture(scope="module")
def chromium_browser():
    """A headless Chromium driven by Playwright (which never downloads a browser here)."""
    executable = chromium_executable()
    from playwright import sync_api  # pinned in the test extra: missing is a failure, not a skip

    args = list(CHROMIUM_FLAGS) + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


# The slowest tests start first, so that under `-n 2 --dist worksteal` the two workers finish
# together instead of one waiting for a long test collected last (seconds measured on 2 cores).
_HEAVY_FIRST = [
    "test_labs.py::test_nbgrader_round_trip[lab07",
    "test_labs.py::test_nbgrader_round_trip[lab08",
    "test_labs.py::test_nbgrader_round_trip[lab04",
    "test_labs.py::test_nbgrader_round_trip[lab05",
    "test_labs.py::test_nbgrader_round_trip[lab06",
    "test_labs.py::test_nbgrader_round_trip[lab02",
    "test_labs.py::test_nbgrader_round_trip",
    "test_labs.py::test_course_lib_grade_agrees[lab02",
    "test_redteam_unprivileged.py",
    "test_redteam.py",
    "test_labs.py::test_course_lib_grade_agrees",
    "test_browser.py",
    "test_grading_failures.py",
    "test_feedback_safety.py",
    "test_notebooks.py",
]


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((i for i, key in enumerate(_HEAVY_FIRST) if key in item.nodeid), len(_HEAVY_FIRST))

    items.sort(key=rank)  # stable: the order within a rank is the collection order
