"""Every committed notebook is clean: valid nbformat 4.5, stable ids, no outputs, a parameters
cell, kernelspec python3, and in the canonical normalised form."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from course_lib.notebooks import problems

REPO = Path(__file__).resolve().parent.parent


def _committed_notebooks() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "*.ipynb"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
        tracked = [REPO / p for p in out if p.split("/")[0] in ("lessons", "solutions", "labs")]
    except (subprocess.CalledProcessError, FileNotFoundError):
        tracked = []
    on_disk = [
        p for pat in ("lessons/*.ipynb", "solutions/*/*.ipynb", "labs/*/*.ipynb") for p in REPO.glob(pat)
    ]
    return sorted(set(tracked) | set(on_disk))


NOTEBOOKS = _committed_notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(REPO)) for p in NOTEBOOKS])
def test_notebook_is_clean(path: Path):
    found = problems(path)
    assert not found, "\n".join(found)


def test_problems_catches_outputs(tmp_path: Path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})
    cell.outputs = [nbformat.v4.new_output("stream", text="hi")]
    cell.execution_count = 3
    nb.cells = [cell]
    p = tmp_path / "dirty.ipynb"
    nbformat.write(nb, str(p))
    found = problems(p)
    assert any("outputs" in f for f in found), found


def test_problems_requires_parameters_cell(tmp_path: Path):
    import nbformat

    from course_lib.notebooks import write

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    p = tmp_path / "noparams.ipynb"
    write(nb, p)
    assert any("parameters" in f for f in problems(p))


def test_labs_mirror_solutions():
    sols = {p.name for p in (REPO / "solutions").iterdir() if p.is_dir()}
    labs = {p.name for p in (REPO / "labs").iterdir() if p.is_dir()}
    assert sols == labs, (
        f"labs/ and solutions/ differ: only in solutions {sols - labs}, only in labs {labs - sols}"
    )


def test_no_importorskip_for_pinned_packages():
    """A pinned package that fails to import is a broken setup: the test must fail, not skip."""
    import re

    from course_lib.versions import pinned_versions

    pinned = {name.lower().replace("-", "_") for name in pinned_versions(include_test=True)}
    offenders = []
    for py in (REPO / "tests").glob("*.py"):
        for mod in re.findall(r"importorskip\(\s*['\"]([\w.]+)['\"]", py.read_text()):
            if mod.split(".")[0].lower() in pinned:
                offenders.append(f"{py.name}: {mod}")
    assert not offenders, f"import pinned packages directly: {offenders}"


def _course_lib_modules():
    import importlib
    import pkgutil

    import course_lib

    return [
        importlib.import_module(m.name)
        for m in pkgutil.walk_packages(course_lib.__path__, "course_lib.")
        if m.name != "course_lib.__main__"
    ]


def test_public_names_do_not_collide():
    """One name per idea: a public function or class is defined in one course_lib module only
    (another module may re-export the same object, never define a different one of that name).
    Lab notebooks may still ask learners to write their own version of a library function."""
    import inspect

    defined: dict[str, list[str]] = {}
    for mod in _course_lib_modules():
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == mod.__name__:
                defined.setdefault(name, []).append(mod.__name__)
    clashes = {n: ms for n, ms in defined.items() if len(ms) > 1}
    # course_lib.grading re-exports its submodules' names; those are the same objects
    assert not clashes, f"the same public name is defined in several modules: {clashes}"


def test_no_private_imports_across_modules():
    """A module uses another module's public API only (``from .x import _helper`` couples them
    to internals). The grading package's submodules form one unit and are exempt."""
    import ast

    offenders = []
    for py in (REPO / "course_lib").rglob("*.py"):
        if "grading" in py.parts:
            continue
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").startswith("course_lib")
            ):
                bad = [a.name for a in node.names if a.name.startswith("_")]
                if bad:
                    offenders.append(f"{py.relative_to(REPO)}:{node.lineno}: {bad}")
    assert not offenders, f"private names imported from another module: {offenders}"


def notebook_modules() -> dict[str, list[str]]:
    """``{notebook path: sorted course_lib modules its code cells import}`` for every lesson and
    lab solution (what DEVELOPERS.md's "Which notebook uses which module" table lists)."""
    import ast
    import json

    table = {}
    for nb in sorted((REPO / "lessons").glob("*.ipynb")) + sorted((REPO / "solutions").glob("*/*.ipynb")):
        mods = set()
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            src = "\n".join("pass" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines())
            try:
                tree = ast.parse(src)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("course_lib"):
                    if node.module == "course_lib":
                        mods |= {a.name for a in node.names}
                    else:
                        mods.add(node.module.removeprefix("course_lib."))
                elif isinstance(node, ast.Import):
                    mods |= {
                        a.name.removeprefix("course_lib.")
                        for a in node.names
                        if a.name.startswith("course_lib.")
                    }
        table[str(nb.relative_to(REPO))] = sorted(mods)
    return table


def test_developers_table_lists_the_modules_each_notebook_uses():
    """DEVELOPERS.md's table from each lesson and lab to the course_lib modules it imports is
    generated from the notebooks: this fails (and prints the right table) when they drift."""
    import re

    want = "\n".join(
        f"| `{nb}` | {', '.join(f'`{m}`' for m in mods) or '(none)'} |"
        for nb, mods in notebook_modules().items()
    )
    text = (REPO / "DEVELOPERS.md").read_text()
    m = re.search(
        r"<!-- notebook-modules:start -->\n\| notebook \| course_lib modules \|\n\|---\|---\|\n"
        r"(.*?)\n<!-- notebook-modules:end -->",
        text,
        re.S,
    )
    assert m, "DEVELOPERS.md lacks the notebook-modules table markers"
    assert m.group(1).strip() == want, f"update the table in DEVELOPERS.md to:\n{want}"
