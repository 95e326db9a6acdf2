"""When the grader itself fails, no grade is lost: a submission whose sandbox cannot start is
retried, then reported "not graded" (exit status 1), and never written over an earlier grade;
grading one student keeps the whole class in the export; bad ids are refused clearly."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from course_lib.__main__ import main
from course_lib.grading import grade_lab

REPO = Path(__file__).resolve().parent.parent
LAB = "lab00_pytorch_warmup"

pytestmark = pytest.mark.slow


def _course(root: Path, students=("carol", "dave")) -> Path:
    c = root / "course"
    shutil.copytree(REPO / "solutions" / LAB, c / "solutions" / LAB)
    shutil.copytree(REPO / "labs" / LAB, c / "labs" / LAB)
    for s in students:
        d = c / "submitted" / s / LAB
        d.mkdir(parents=True)
        shutil.copy(REPO / "solutions" / LAB / f"{LAB}.ipynb", d / f"{LAB}.ipynb")
    return c


def _csv(course: Path) -> dict[str, dict]:
    with open(course / "grades" / f"{LAB}.csv", newline="", encoding="utf-8") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def test_failures_never_lose_grades(tmp_path, capsys):
    """One test, because each step builds on the gradebook the step before left."""
    from nbgrader.api import Gradebook

    course = _course(tmp_path)
    first = grade_lab(LAB, course_root=course, workers=2, progress=False, print_fn=lambda *a: None)
    assert {r.student: r.score for r in first} == {"carol": 14.0, "dave": 14.0}

    # 0.6 GB of address space: the kernel cannot even import numpy, before any student code
    # runs. That is the grader's failure, not carol's: retried, reported, never recorded.
    code = main(
        ["grade", LAB, "--course", str(course), "--student", "carol", "--workers", "1", "--memory-gb", "0.6"]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert "NOT GRADED" in out and "sandbox could not start" in out
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_submission(LAB, "carol").score == 14.0
    rows = _csv(course)
    assert set(rows) == {"carol", "dave"}, "grading one student dropped the class from the export"
    assert rows["carol"]["score"] == "14" and rows["carol"]["status"].startswith("not graded in this run")
    assert rows["dave"]["score"] == "14"

    # grading one student again keeps the class in the export
    results = grade_lab(
        LAB, course_root=course, workers=1, student="dave", progress=False, print_fn=lambda *a: None
    )
    assert [(r.student, r.score) for r in results] == [("dave", 14.0)]
    rows = _csv(course)
    assert set(rows) == {"carol", "dave"} and rows["dave"]["status"] == "graded"


@pytest.mark.parametrize("bad", ["..", "../carol", "a/b", "new\nline", ""])
def test_bad_student_option_is_refused_clearly(tmp_path, bad, capsys):
    course = _course(tmp_path, students=("carol",))
    with pytest.raises(SystemExit) as info:
        main(["grade", LAB, "--course", str(course), "--student", bad])
    assert info.value.code == 2
    assert "student id" in capsys.readouterr().err
