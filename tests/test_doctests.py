"""Every course_lib module's docstring examples run (and must pass): they are the small
examples the style guide asks each function to carry, and they rot silently otherwise."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import course_lib

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(course_lib.__path__, "course_lib.")
    if m.name != "course_lib.__main__"
)


def test_every_module_is_found():
    assert {"course_lib.grading.wire", "course_lib.tokenization", "course_lib.paths"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see above)"
