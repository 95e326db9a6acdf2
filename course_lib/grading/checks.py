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

:func:`call_student` is how a test calls a student function: arguments passed explicitly
(never through notebook globals), a check that the function left them unchanged, and an error
raised inside student code turned into a failure that carries the test's hint.

    >>> import torch
    >>> def scale(x):
    ...     x *= 2          # changes the caller's tensor
    ...     return x
    >>> call_student(scale, torch.ones(2), hint="work on a copy: x = x * 2")
    Traceback (most recent call last):
    ...
    AssertionError: scale changed its argument 1 (x) in place; the task says to leave its inputs unchanged. Hint: work on a copy: x = x * 2
"""

from __future__ import annotations

import ast
import inspect
import textwrap

__all__ = ["student_source", "forbidden_calls", "call_student", "record_student_cell", "reset_student_cells"]

_CELLS: list[str] = []  # student cells run so far (the verifier's trusted copies), in order


def reset_student_cells() -> None:
    """Forget the recorded cells (the verifier calls this before each submission)."""
    _CELLS.clear()


def record_student_cell(source: str) -> None:
    """Remember a student cell's source (the verifier calls this for every cell it runs)."""
    _CELLS.append(str(source))


def _definition_in(source: str, name: str) -> str | None:
    try:
        tree = ast.parse(
            "\n".join("pass" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())
        )
    except SyntaxError:
        return None
    found = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            found = ast.get_source_segment(source, node)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
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
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
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


def _snapshot(value):
    import copy

    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, dict, set, tuple)):
        try:
            return copy.deepcopy(value)
        except Exception:  # noqa: BLE001 - objects that cannot be copied are not checked
            return None
    return None


def _unchanged(before, after) -> bool:
    import numpy as np
    import torch

    if isinstance(before, torch.Tensor):
        return (
            isinstance(after, torch.Tensor)
            and before.shape == after.shape
            and before.dtype == after.dtype
            and torch.equal(before, after.detach())
        )
    if isinstance(before, np.ndarray):
        return (
            isinstance(after, np.ndarray)
            and before.shape == after.shape
            and np.array_equal(before, after, equal_nan=True)
        )
    if isinstance(before, (list, tuple)):
        return (
            type(before) is type(after)
            and len(before) == len(after)
            and all(_unchanged(b, a) for b, a in zip(before, after))
        )
    if isinstance(before, dict):
        return (
            isinstance(after, dict)
            and before.keys() == after.keys()
            and all(_unchanged(before[k], after[k]) for k in before)
        )
    try:
        return bool(before == after)
    except Exception:  # noqa: BLE001
        return True


def _param_names(fn) -> list[str]:
    from .remote import Remote

    if isinstance(fn, Remote):
        try:
            tree = ast.parse(student_source(fn))
            node = tree.body[0]
            return [a.arg for a in node.args.args] if isinstance(node, ast.FunctionDef) else []
        except (ValueError, SyntaxError, IndexError):
            return []
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def _name(fn) -> str:
    from .remote import Remote

    if isinstance(fn, Remote):
        return (
            object.__getattribute__(fn, "_name")
            or f"{object.__getattribute__(fn, '_type_name')} (a student object)"
        )
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def call_student(fn, *args, hint: str = "", check_unchanged: bool = True, **kwargs):
    """Call student function ``fn(*args, **kwargs)`` the way every lab test should.

    * Arguments are passed explicitly by the test (never read from notebook globals).
    * With ``check_unchanged`` (the default), tensors, arrays and containers passed in must be
      left as they were: a function that modifies its input in place fails with a message
      naming the argument.
    * An exception raised inside student code becomes an ``AssertionError`` that names the
      function, the error, and ``hint`` (what the likely mistake is), so the learner sees the
      hint instead of a bare traceback.

    Works the same in the learner's kernel, under plain nbgrader and under ``course_lib grade``
    (where in-place changes made in the sandbox are applied to the test's objects).
    """
    name = _name(fn)
    params = _param_names(fn)
    before = [_snapshot(a) for a in args]
    before_kw = {k: _snapshot(v) for k, v in kwargs.items()}
    suffix = f" Hint: {hint}" if hint else ""
    try:
        out = fn(*args, **kwargs)
    except AssertionError:
        raise
    except Exception as e:  # noqa: BLE001 - a student error becomes a failure with the hint
        raise AssertionError(f"{name} raised {type(e).__name__}: {str(e)[:500]}.{suffix}") from None
    if check_unchanged:
        for i, (b, a) in enumerate(zip(before, args)):
            if b is not None and not _unchanged(b, a):
                label = f"argument {i + 1}" + (f" ({params[i]})" if i < len(params) else "")
                raise AssertionError(
                    f"{name} changed its {label} in place; the task says to leave "
                    f"its inputs unchanged.{suffix}"
                )
        for k, b in before_kw.items():
            if b is not None and not _unchanged(b, kwargs[k]):
                raise AssertionError(
                    f"{name} changed its argument {k!r} in place; the task says "
                    f"to leave its inputs unchanged.{suffix}"
                )
    return out
