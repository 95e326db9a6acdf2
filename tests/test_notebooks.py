"""Execute every lesson and lab-solution notebook with papermill, offline, at test size.

Small parameters come from each notebook's own metadata
(``metadata.open_llm_lab.test_parameters``), so adding a notebook adds its test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(REPO.glob("lessons/*.ipynb")) + sorted(REPO.glob("solutions/*/*.ipynb"))


def test_parameters(path: Path) -> dict:
    nb = nbformat.read(str(path), as_version=4)
    params = nb.metadata.get("open_llm_lab", {}).get("test_parameters", {})
    assert isinstance(params, dict), f"{path}: test_parameters must be a dict"
    return params


test_parameters.__test__ = False  # a helper, not a test


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(REPO)) for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path):
    import papermill as pm

    out = tmp_path / path.name
    env_backup = dict(os.environ)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        pm.execute_notebook(
            str(path),
            str(out),
            parameters=test_parameters(path),
            cwd=str(path.parent),
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
            execution_timeout=600,
        )
    except pm.PapermillExecutionError as e:
        pytest.fail(
            f"{path.relative_to(REPO)} failed in cell {e.exec_count}: {e.ename}: {e.evalue}", pytrace=False
        )
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    nb = nbformat.read(str(out), as_version=4)
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, json.dumps(errors[0])[:2000]


def test_every_notebook_is_collected():
    assert any(p.parent.name == "lessons" for p in NOTEBOOKS), "no lesson notebooks found"
