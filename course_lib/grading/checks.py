"""Checks that lab tests make on student code itself, the same under both graders.

A test that wants to forbid a library call ("write softmax without ``torch.softmax``") cannot
do it by patching ``torch`` at run time: under ``course_lib grade`` the test runs in the trusted
process and the student's code in the sandbox, so the patch would not reach it (and in plain
nbgrader a student can dodge the patch by keeping a reference). The rule is static instead: the
test reads the source of the student's function and looks for the forbidden names.

* In plain nbgrader (and in the learner's own kernel) the source comes from
  ``inspect.getsource`` of the student's function.
* Under ``course_lib grade`` the function is a :class:`~.remote.Remote`; the verifier records
  the source of every student cell it ran (trusted copies, from the sanitised notebook), and
  the source is the last definition of that name in them.

    >>> def f(x):
    ...     import torch
    ...     return torch.softmax(x, -1)
    >>> forbidden_calls(f, ["torch.softmax", "F.softmax"])
    ['torch.softmax']
"""
from __future__ import annotations

import ast
import inspect
import textwrap

__all__ = ["student_source", "forbidden_calls", "record_student_cell", "reset_student_cells"]

_CELLS: list[str] = []   # student cells run so far (the verifier's trusted copies), in order


def reset_student_cells() -> None:
    """Forget the recorded cells (the verifier calls this before each submission)."""
    _CELLS.clear()


def record_student_cell(source: str) -> None:
    """Remember a student cell's source (the verifier calls this for every cell it runs)."""
    _CELLS.append(str(source))


def _definition_in(source: str, name: str) -> str | None:
    try:
        tree = ast.parse("\n".join("pass" if ln.lstrip().startswith(("%", "!")) else ln
                                   for ln in source.splitlines()))
    except SyntaxError:
        return None
    found = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            found = ast.get_source_segment(source, node)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                  for t in node.targets):
            found = ast.get_source_segment(source, node)
    return found


def student_source(fn) -> str:
    """The source of student function (or class) ``fn``; ``ValueError`` if it cannot be found."""
    from .remote import Remote

    if isinstance(fn, Remote):
        name = object.__getattribute__(fn, "_name")
        for cell in reversed(_CELLS):
            src = _definition_in(cell, name) if name else None
            if src is not None:
                return src
        raise ValueError(f"could not find the source of {name!r} in the submission's cells")
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise ValueError(f"could not read the source of {getattr(fn, '__name__', fn)!r}: {e}") from None


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def forbidden_calls(fn, names: list[str]) -> list[str]:
    """Which of ``names`` (dotted, e.g. ``"torch.softmax"``, or ``".softmax"`` for any method
    of that name) the source of ``fn`` mentions, in the order given. Any mention counts, a call
    or a reference (``s = torch.softmax``), as does ``getattr(x, "softmax")``."""
    tree = ast.parse(student_source(fn))
    seen: set[str] = set()
    attrs: set[str] = set()
    for node in ast.walk(tree):
        d = _dotted(node) if isinstance(node, (ast.Attribute, ast.Name)) else None
        if d:
            seen.add(d)
        if isinstance(node, ast.Attribute):
            attrs.add(node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            attrs.add(str(node.args[1].value))
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                seen.add(f"{node.module}.{alias.name}")
                attrs.add(alias.name)
    hits = []
    for name in names:
        if name.startswith("."):
            if name[1:] in attrs:
                hits.append(name)
        elif name in seen or any(s.endswith("." + name) for s in seen):
            hits.append(name)
    return hits
