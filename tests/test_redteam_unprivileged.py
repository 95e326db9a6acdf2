"""The red team again, with the grader itself running as an unprivileged user.

``python -m course_lib grade`` runs as uid 65534 (no root, no capabilities), so every kernel is
isolated by bubblewrap instead of root namespaces. The course folder belongs to that user: the
kernels must still not be able to read or change it. Grades come back through the CSV export:
every submission in tests/redteam/lab00_pytorch_warmup/ must score within its expected.yaml
bounds, a classmate graded in an earlier run keeps her grade, and the grader must not print the
"isolation is unavailable" warning (bubblewrap was used, not the limits-only fallback).
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
import yaml
from once import once
from test_sandbox import UNPRIVILEGED_UID, run_unprivileged, unprivileged_python, unprivileged_workspace

REPO = Path(__file__).resolve().parent.parent
LAB = "lab00_pytorch_warmup"
RED = REPO / "tests" / "redteam" / LAB
EXPECTED = yaml.safe_load((RED / "expected.yaml").read_text())
WARNING = "WARNING: OS-level isolation is unavailable"
# the limits tests/test_redteam.py grades with, as command-line options
OPTIONS = ["--workers", "2", "--memory-gb", "3.0", "--cell-timeout", "20", "--cpu-seconds", "300"]

pytestmark = pytest.mark.slow


def _course(ws: Path) -> tuple[Path, Path, Path]:
    """The course folder, carol's submissions folder and the red team's, owned by the
    unprivileged user."""
    course, carol, red = ws / "course", ws / "carol", ws / "red"
    shutil.copytree(REPO / "solutions" / LAB, course / "solutions" / LAB)
    shutil.copytree(REPO / "labs" / LAB, course / "labs" / LAB)
    (carol / "carol" / LAB).mkdir(parents=True)
    shutil.copy(REPO / "solutions" / LAB / f"{LAB}.ipynb", carol / "carol" / LAB / f"{LAB}.ipynb")
    for nb in sorted(RED.glob("*.ipynb")):
        dest = red / nb.stem / LAB
        dest.mkdir(parents=True)
        text = nb.read_text(encoding="utf-8").replace("@@COURSE@@", str(course))
        (dest / f"{LAB}.ipynb").write_text(text, encoding="utf-8")
    for top in (course, carol, red):
        for p in [top, *top.rglob("*")]:
            os.chown(p, UNPRIVILEGED_UID, UNPRIVILEGED_UID, follow_symlinks=False)
    return course, carol, red


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """(CSV rows by student, stdout of both runs) of carol's run, then the red team's; built
    once per test run, whichever xdist worker asks first."""
    return once(tmp_path_factory, "redteam-unprivileged", _grade_as_unprivileged_user)


def _grade_as_unprivileged_user():
    ws = unprivileged_workspace()
    try:
        python = unprivileged_python(ws)
        course, carol, red = _course(ws)
        out = []
        for subs, name in ((carol, "carol"), (red, "red")):
            csv_path = ws / "home" / f"{name}.csv"  # a folder of the unprivileged user
            r = run_unprivileged(
                python,
                [
                    "-m",
                    "course_lib",
                    "grade",
                    LAB,
                    "--course",
                    str(course),
                    "--submissions",
                    str(subs),
                    "--csv",
                    str(csv_path),
                    *OPTIONS,
                ],
                ws,
                timeout=1500,
            )
            out.append(r.stdout)
            assert r.returncode == 0, f"grading {name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        with open(ws / "home" / "red.csv", newline="", encoding="utf-8") as f:
            rows = {row["student"]: row for row in csv.DictReader(f)}
        return rows, "\n".join(out)
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def test_bubblewrap_was_used(graded):
    _, stdout = graded
    assert WARNING not in stdout, stdout[-2000:]


def test_every_submission_is_graded(graded):
    rows, _ = graded
    assert set(rows) == set(EXPECTED) | {"carol"}, set(rows) ^ (set(EXPECTED) | {"carol"})
    for name in EXPECTED:
        assert rows[name]["status"] == "graded", rows[name]


def test_classmate_keeps_her_grade(graded):
    """carol, graded in the first run, is listed from the gradebook with her grade."""
    rows, _ = graded
    assert float(rows["carol"]["score"]) == 14.0, rows["carol"]
    assert rows["carol"]["status"].startswith("from the gradebook"), rows["carol"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_score_bounded_by_honest_work(graded, name):
    rows, _ = graded
    row, exp = rows[name], EXPECTED[name]
    score = float(row["score"])
    why = f"failed: {row['failed_tests']}; notes: {row['notes'][:500]}"
    assert score <= exp["max_score"], f"{name} ({exp['attack']}) scored {score} > {exp['max_score']}; {why}"
    if "min_score" in exp:
        assert score >= exp["min_score"], f"{name} lost honest points: {score} < {exp['min_score']}; {why}"
