"""Seeded plausible mistakes for each lab (``tests/lab_mistakes/<lab>.yaml``), as submissions.

Used by the tests (every mistake must lose points) and by ``benchmarks/grading.py`` (a class
of realistic submissions). Each entry replaces the source of one solution cell, by grade_id.

    >>> entries = load_mistakes("lab00_pytorch_warmup")
    >>> len(entries) >= 3 and {"name", "cell", "source"} <= set(entries[0])
    True
"""

from __future__ import annotations

from pathlib import Path

from ..paths import REPO_ROOT

__all__ = ["MISTAKES_DIR", "load_mistakes", "apply_mistake"]

MISTAKES_DIR = REPO_ROOT / "tests" / "lab_mistakes"


def load_mistakes(lab: str, folder: Path = MISTAKES_DIR) -> list[dict]:
    """The entries of ``folder/<lab>.yaml`` (``[]`` if the file does not exist)."""
    import yaml

    path = Path(folder) / f"{lab}.yaml"
    if not path.exists():
        return []
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    for e in entries:
        if not (isinstance(e, dict) and {"name", "cell", "source"} <= set(e)):
            raise ValueError(f"{path}: each entry needs name, cell and source, got {e!r}")
    return entries


def apply_mistake(lab: str, mistake: dict, out: str | Path, root: Path = REPO_ROOT) -> Path:
    """Write to ``out`` the solution notebook with one solution cell's source replaced."""
    import nbformat

    from .course import lab_source

    nb = nbformat.read(str(lab_source(lab, root)), as_version=4)
    cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == mistake["cell"]]
    if len(cells) != 1:
        raise ValueError(
            f"{lab}: mistake {mistake['name']!r} names cell {mistake['cell']!r}, "
            f"which matches {len(cells)} cells"
        )
    if not cells[0].metadata["nbgrader"].get("solution"):
        raise ValueError(
            f"{lab}: mistake {mistake['name']!r} must replace a solution cell, not {mistake['cell']!r}"
        )
    cells[0].source = mistake["source"]
    nbformat.write(nb, str(out))
    return Path(out)
