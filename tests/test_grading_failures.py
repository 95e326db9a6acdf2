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


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    c = tmp_path_factory.mktemp("failures") / "course"
    shutil.copytree(REPO / "solutions" / LAB, c / "solutions" / LAB)
    shutil.copytree(REPO / "labs" / LAB, c / "labs" / LAB)
    for s in ("carol", "dave"):
        d = c / "submitted" / s / LAB
        d.mkdir(parents=True)
        shutil.copy(REPO / "solutions" / LAB / f"{LAB}.ipynb", d / f"{LAB}.ipynb")
    first = grade_lab(LAB, course_root=c, workers=2, progress=False, print_fn=lambda *a: None)
    assert {r.student: r.score for r in first} == {"carol": 14.0, "dave": 14.0}
    return c


def _csv(course: Path) -> dict[str, dict]:
    with open(course / "grades" / f"{LAB}.csv", newline="", encoding="utf-8") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def test_sandbox_failure_never_replaces_a_grade(course, capsys):
    from nbgrader.api import Gradebook

    # 0.6 GB of address space: the kernel cannot even import numpy, before any student code
    # runs. That is the grader's failure, not carol's.
    code = main(["grade", LAB, "--course", str(course), "--student", "carol", "--workers", "1",
                 "--memory-gb", "0.6"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "NOT GRADED" in out and "sandbox could not start" in out
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_submission(LAB, "carol").score == 14.0
    rows = _csv(course)
    assert set(rows) == {"carol", "dave"}, "grading one student dropped the class from the export"
    assert rows["carol"]["score"] == "14" and rows["carol"]["status"].startswith("not graded in this run")
    assert rows["dave"]["score"] == "14"


def test_one_student_regraded_keeps_the_class(course):
    results = grade_lab(LAB, course_root=course, workers=1, student="dave", progress=False,
                        print_fn=lambda *a: None)
    assert [(r.student, r.score) for r in results] == [("dave", 14.0)]
    rows = _csv(course)
    assert set(rows) == {"carol", "dave"} and rows["dave"]["status"] == "graded"


@pytest.mark.parametrize("bad", ["..", "../carol", "a/b", "new\nline", ""])
def test_bad_student_option_is_refused_clearly(course, bad, capsys):
    with pytest.raises(SystemExit) as info:
        main(["grade", LAB, "--course", str(course), "--student", bad])
    assert info.value.code == 2
    assert "student id" in capsys.readouterr().err
