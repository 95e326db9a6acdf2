"""nbgrader round trip for every lab in solutions/.

For each lab: regenerating the student version gives exactly the committed labs/ notebook;
autograding the solution scores full marks; the untouched release scores 0; and every seeded
plausible mistake in tests/lab_mistakes/<lab>.yaml loses points.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from course_lib import grading
from course_lib.grading.mistakes import MISTAKES_DIR, apply_mistake, load_mistakes

REPO = Path(__file__).resolve().parent.parent
LABS = grading.list_labs(REPO)
MISTAKES = [(lab, m) for lab in LABS for m in load_mistakes(lab)]


@pytest.mark.parametrize("lab", LABS)
def test_every_lab_has_mistakes(lab):
    assert len(load_mistakes(lab)) >= 10, f"{lab}: seed at least 10 plausible mistakes in {MISTAKES_DIR}"


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_release_matches_committed(lab, tmp_path):
    generated = grading.generate_student_version(lab, tmp_path, REPO)
    committed = REPO / "labs" / lab / f"{lab}.ipynb"
    assert committed.exists(), f"labs/{lab} missing: run python -m course_lib release {lab}"
    assert generated.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), (
        f"labs/{lab} is out of date with solutions/{lab}: run python -m course_lib release {lab}")
    assert sorted(p.name for p in generated.parent.iterdir()) == \
        sorted(p.name for p in committed.parent.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_solution_scores_full_marks(lab):
    res = grading.autograde(lab, {"solution": grading.lab_source(lab, REPO)}, REPO)["solution"]
    assert res.graded, res.not_graded
    assert res.max_score > 0
    lost = res.failed()
    assert res.score == res.max_score, f"solution lost points on {lost}"


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_blank_release_scores_zero(lab):
    release = REPO / "labs" / lab / f"{lab}.ipynb"
    res = grading.autograde(lab, {"blank": release}, REPO)["blank"]
    earned = {k: v["points"] for k, v in res.tests.items() if v["points"] > 0}
    assert res.max_score > 0
    assert res.score == 0, f"the untouched release earned points on {earned}: those tests pass " \
                           "without any work"


@pytest.mark.slow
@pytest.mark.parametrize("lab,mistake", MISTAKES,
                         ids=[f"{lab}-{m['name']}" for lab, m in MISTAKES])
def test_seeded_mistake_loses_points(lab, mistake, tmp_path):
    sub = apply_mistake(lab, mistake, tmp_path / f"{lab}.ipynb")
    res = grading.autograde(lab, {"mistake": sub}, REPO)["mistake"]
    assert res.max_score > 0
    assert res.score < res.max_score, f"mistake {mistake['name']!r} still scored full marks"


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_course_lib_grade_agrees(lab, tmp_path):
    """The sandboxed grader (`python -m course_lib grade`) scores every lab like nbgrader does:
    the solution full marks, the blank release 0, and every seeded mistake below full marks
    (one class per lab, graded two at a time; the red team checks lab00 in depth)."""
    import shutil

    from course_lib.grading import grade_lab

    course = tmp_path / "course"
    shutil.copytree(REPO / "solutions" / lab, course / "solutions" / lab)
    shutil.copytree(REPO / "labs" / lab, course / "labs" / lab)
    subs = {"solution": grading.lab_source(lab, REPO), "blank": REPO / "labs" / lab / f"{lab}.ipynb"}
    for m in load_mistakes(lab):
        subs[f"mistake-{m['name']}"[:60]] = apply_mistake(lab, m, tmp_path / f"{m['name']}.ipynb")
    for student, src in subs.items():
        dest = course / "submitted" / student / lab
        dest.mkdir(parents=True)
        shutil.copy(src, dest / f"{lab}.ipynb")
    results = {r.student: r for r in grade_lab(lab, workers=2, course_root=course, progress=False,
                                               print_fn=lambda *a: None)}
    assert set(results) == set(subs)

    def lost(r):
        return {g: t["reason"][:200] for g, t in r.tests.items() if not t["passed"]}

    sol = results["solution"]
    assert sol.max_score > 0 and sol.score == sol.max_score, f"solution lost points: {lost(sol)}; {sol.notes}"
    earned = {g: t["points"] for g, t in results["blank"].tests.items() if t["points"] > 0}
    assert results["blank"].score == 0, f"the blank release earned points on {earned}"
    for student, r in results.items():
        if student.startswith("mistake-"):
            assert r.score < r.max_score, f"{student} scored full marks under course_lib grade"
            assert not r.not_graded, f"{student} was not graded: {r.notes}"
