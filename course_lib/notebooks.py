"""Notebook hygiene: the canonical on-disk form of every committed notebook.

Used by ``tools/nbtools.py`` (normalize/check from the shell), by ``grading.release`` and by the
hygiene tests.

Cell ids are derived from the cell's position and its first line, so they are stable across
saves that do not change the cell, and a notebook normalised twice is byte-identical.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import nbformat

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}


def _stable_id(index: int, cell) -> str:
    first = (cell.get("source") or "").split("\n", 1)[0]
    slug = re.sub(r"[^a-z0-9]+", "-", first.lower()).strip("-")[:24] or cell["cell_type"]
    digest = hashlib.sha1(f"{index}:{cell['cell_type']}:{first}".encode(), usedforsecurity=False).hexdigest()[
        :6
    ]
    return f"c{index:02d}-{slug}-{digest}"[:64]


def normalize(nb) -> "nbformat.NotebookNode":
    """Strip outputs/execution counts, set ids, kernelspec and nbformat 4.5 (in place)."""
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    for key in ("widgets", "papermill", "toc"):
        nb.metadata.pop(key, None)
    seen = set()
    for i, cell in enumerate(nb.cells):
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        cell.pop("attachments", None) if cell.cell_type != "markdown" else None
        cid = cell.get("id")
        if not cid or cid in seen or not re.fullmatch(r"[a-zA-Z0-9-_]{1,64}", cid):
            cell["id"] = _stable_id(i, cell)
        seen.add(cell["id"])
    return nb


def problems(path: Path) -> list[str]:
    """Hygiene problems of one committed notebook (empty list when clean)."""
    out = []
    try:
        nb = nbformat.read(str(path), as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)
    except Exception as e:  # noqa: BLE001 - report any reason it is invalid
        return [f"{path}: not valid nbformat: {e}"]
    if (nb.nbformat, nb.nbformat_minor) < (4, 5):
        out.append(f"{path}: nbformat {nb.nbformat}.{nb.nbformat_minor}, need 4.5 (cell ids)")
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        out.append(f"{path}: kernelspec must be python3")
    ids = [c.get("id") for c in nb.cells]
    if None in ids or len(set(ids)) != len(ids):
        out.append(f"{path}: cell ids missing or duplicated")
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(params) != 1 or params[0].cell_type != "code":
        out.append(f"{path}: needs exactly one code cell tagged 'parameters' (found {len(params)})")
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None):
            out.append(f"{path}: cell {i} has outputs or an execution count; strip them")
    raw = Path(path).read_text(encoding="utf-8")
    normalized = nbformat.writes(normalize(nbformat.reads(raw, as_version=4))) + "\n"
    if raw != normalized:
        out.append(f"{path}: not normalised; run python tools/nbtools.py normalize {path}")
    return out


def write(nb, path: str | Path) -> None:
    """Normalise ``nb`` and write it to ``path`` (the canonical on-disk form)."""
    Path(path).write_text(nbformat.writes(normalize(nb)) + "\n", encoding="utf-8")
