"""The grader's idea of where things are: one definition (course_lib.paths), and a sandbox that
cannot see the course it grades. After a module moves, a path spelt out by hand would silently
point at the wrong folder and unhide the course inside the sandbox: these tests fail then."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib import paths

REPO = Path(__file__).resolve().parent.parent


def test_paths_point_at_this_repository():
    assert paths.REPO_ROOT == REPO
    assert (paths.REPO_ROOT / "solutions").is_dir() and (paths.COURSE_LIB_DIR / "paths.py").is_file()


def test_no_module_spells_out_the_repository_root():
    """``Path(__file__)...parent.parent`` is written once, in course_lib/paths.py."""
    offenders = []
    for py in (REPO / "course_lib").rglob("*.py"):
        if py.name == "paths.py":
            continue
        if re.search(r"__file__\)?\.resolve\(\)\.parent\.parent|__file__\)\.parent\.parent", py.read_text()):
            offenders.append(str(py.relative_to(REPO)))
    assert not offenders, f"use course_lib.paths.REPO_ROOT instead in {offenders}"


def test_hidden_paths_cover_the_course_and_the_repository(tmp_path):
    from course_lib.grading.sandbox import _hidden_paths

    hidden = _hidden_paths(tmp_path)
    covers = lambda p: any(str(p) == h or str(p).startswith(h.rstrip("/") + "/") for h in hidden)
    assert covers(REPO / "solutions") and covers(tmp_path / "gradebook.db"), hidden


PROBE = """
import json, os, sys
print(json.dumps({p: os.path.exists(p) for p in sys.argv[1:]}))
"""


def test_sandbox_cannot_see_solutions_or_the_gradebook(tmp_path):
    from course_lib.grading.sandbox import SandboxKernel, SandboxLimits, isolation_level

    level = isolation_level()
    if level == "limits-only":
        pytest.skip(
            "no OS isolation on this machine (needs root with unshare, or bubblewrap): "
            "the sandbox can see the course here, and grade_lab warns about it"
        )
    course = tmp_path / "course"
    (course / "solutions").mkdir(parents=True)
    (course / "gradebook.db").write_text("x")
    watched = [
        str(REPO / "solutions"),
        str(REPO / ".git"),
        str(course / "gradebook.db"),
        str(course / "solutions"),
    ]
    with SandboxKernel(course, SandboxLimits(call_timeout_s=60)) as k:
        code = f"import sys; sys.argv = ['probe'] + {watched!r}\n" + PROBE
        r = k.execute(code)
        assert r["status"] == "ok", r
        seen = json.loads("".join(o.get("text", "") for o in r["outputs"] if o.get("name") == "stdout"))
    assert not any(seen.values()), f"the sandbox ({level}) sees {[p for p, v in seen.items() if v]}"
    # the control: the same probe outside the sandbox sees them
    out = subprocess.run([sys.executable, "-c", PROBE, *watched], capture_output=True, text=True)
    assert all(json.loads(out.stdout).values())
