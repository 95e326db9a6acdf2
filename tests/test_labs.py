"""nbgrader round trip for every lab in solutions/.

For each lab: regenerating the student version gives exactly the committed labs/ notebook;
under plain nbgrader AND under `course_lib grade`, the solution scores full marks, the untouched
release scores 0, and seeded plausible mistakes from tests/lab_mistakes/<lab>.yaml lose points:
by default up to NBGRADER_MISTAKES per lab under nbgrader (spread over the cells) and a sample of
2 under course_lib grade; with OPEN_LLM_LAB_ALL_MISTAKES=1 every mistake under both. The
heaviest of these run first (tests/conftest.py orders them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from course_lib import grading
from course_lib.grading.mistakes import MISTAKES_DIR, apply_mistake, load_mistakes

REPO = Path(__file__).resolve().parent.parent
LABS = grading.list_labs(REPO)


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
        f"labs/{lab} is out of date with solutions/{lab}: run python -m course_lib release {lab}"
    )
    assert sorted(p.name for p in generated.parent.iterdir()) == sorted(
        p.name for p in committed.parent.iterdir()
    )


FULL_MATRIX = os.environ.get("OPEN_LLM_LAB_ALL_MISTAKES") == "1"
# Mistakes graded per lab under plain nbgrader in the default run: one submission costs 4-18 s of
# a worker (a fresh kernel running the whole lab), and the suite must stay under 30 minutes on 2
# cores as labs grow (12 per lab took 1,434 worker-seconds for 9 labs, half the suite's wall time).
# course_lib grade's sample is taken from the other mistakes, so the default run grades
# NBGRADER_MISTAKES + 2 different mistakes per lab.
NBGRADER_MISTAKES = 6


def _sample(mistakes: list[dict], k: int = 2) -> list[int]:
    """Indices of up to ``k`` mistakes spread over the solution cells: the first mistake of each
    cell in file order, then the second of each, and so on (sorted).

    >>> _sample([{"cell": "a"}, {"cell": "a"}, {"cell": "b"}, {"cell": "c"}], k=3)
    [0, 2, 3]
    >>> _sample([{"cell": "a"}, {"cell": "a"}, {"cell": "b"}], k=5)
    [0, 1, 2]
    """
    by_cell: dict[str, list[int]] = {}
    for i, m in enumerate(mistakes):
        by_cell.setdefault(m["cell"], []).append(i)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < min(k, len(mistakes)):
        chosen += [ids[depth] for ids in by_cell.values() if depth < len(ids)][: k - len(chosen)]
        depth += 1
    return sorted(chosen)


def test_course_lib_sample_avoids_the_nbgrader_sample():
    ms = [{"cell": c} for c in "aabbccddeeff"]
    assert _course_lib_selection(ms) == [1, 3]
    assert not set(_course_lib_selection(ms)) & set(_sample(ms, NBGRADER_MISTAKES))
    few = [{"cell": c} for c in "abc"]  # nbgrader grades all three: course_lib grade reuses two
    assert _course_lib_selection(few) == [0, 1]


def test_sample_spreads_over_cells():
    mistakes = [{"cell": c} for c in "aaabbc"]
    assert _sample(mistakes, 3) == [0, 3, 5]
    assert _sample(mistakes, 4) == [0, 1, 3, 5]
    assert _sample(mistakes, 10) == list(range(6))


def _nbgrader_selection(mistakes: list[dict]) -> list[int]:
    return list(range(len(mistakes))) if FULL_MATRIX else _sample(mistakes, NBGRADER_MISTAKES)


def _course_lib_selection(mistakes: list[dict], k: int = 2) -> list[int]:
    """k mistakes for course_lib grade's sample, spread over the cells, from those plain nbgrader
    does not grade in the default run (topped up from those it does when too few are left).

    >>> ms = [{"cell": c} for c in "aabbccddeeff"]
    >>> _course_lib_selection(ms)
    [1, 3]
    """
    graded = set(_sample(mistakes, NBGRADER_MISTAKES))
    rest = [i for i in range(len(mistakes)) if i not in graded]
    picked = [rest[j] for j in _sample([mistakes[i] for i in rest], k)]
    return picked + [i for i in sorted(graded) if i not in picked][: k - len(picked)]


def _mistake_id(i: int, mistake: dict) -> str:
    return f"m{i:02d}-{mistake['name']}"[:60]


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_nbgrader_round_trip(lab, tmp_path):
    """Plain nbgrader autograde: the solution scores full marks, the untouched release 0, and
    seeded mistakes below full marks: up to NBGRADER_MISTAKES per lab spread over the cells
    (every one with OPEN_LLM_LAB_ALL_MISTAKES=1). One class per lab (one generate_assignment,
    one kernel per submission) instead of one course per notebook."""
    all_mistakes = load_mistakes(lab)
    picked = _nbgrader_selection(all_mistakes)
    mistakes = [all_mistakes[i] for i in picked]
    subs = {"solution": grading.lab_source(lab, REPO), "blank": REPO / "labs" / lab / f"{lab}.ipynb"}
    subs |= {
        _mistake_id(i, all_mistakes[i]): apply_mistake(lab, all_mistakes[i], tmp_path / f"{i:02d}.ipynb")
        for i in picked
    }
    results = grading.autograde(lab, subs, REPO)
    assert set(results) == set(subs)
    not_graded = {s: r.not_graded for s, r in results.items() if not r.graded}
    assert not not_graded, f"nbgrader could not grade: {not_graded}"
    assert all(r.max_score > 0 for r in results.values())
    sol = results.pop("solution")
    assert sol.score == sol.max_score, f"solution lost points on {sol.failed()}"
    blank = results.pop("blank")
    earned = {k: v["points"] for k, v in blank.tests.items() if v["points"] > 0}
    assert blank.score == 0, (
        f"the untouched release earned points on {earned}: those tests pass without any work"
    )
    full = [s for s, r in results.items() if r.score >= r.max_score]
    assert not full, f"{len(full)} of {len(mistakes)} mistakes still scored full marks: {full}"


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_course_lib_grade_agrees(lab, tmp_path):
    """The sandboxed grader (`python -m course_lib grade`) scores every lab like nbgrader does:
    the solution full marks, the blank release 0, and seeded mistakes below full marks (one
    class per lab, graded two at a time; the red team checks lab00 in depth).

    By default a sample of two mistakes per lab, in different cells and not among those plain
    nbgrader grades above, is graded here (with the
    solution and the blank that is four submissions, two rounds of the grader's two workers;
    NBGRADER_MISTAKES per lab are graded under nbgrader above): the whole matrix costs ~15
    minutes on 2 cores. Set OPEN_LLM_LAB_ALL_MISTAKES=1 to grade every mistake of every lab
    under both graders (test_course_lib_grade_all_mistakes, test_nbgrader_round_trip)."""
    _grade_agrees(lab, tmp_path, _course_lib_selection(load_mistakes(lab)))


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_course_lib_grade_all_mistakes(lab, tmp_path):
    """Every seeded mistake also loses points under `course_lib grade` (opt-in: ~15 minutes)."""
    if not FULL_MATRIX:
        pytest.skip(
            "the full mistake matrix under course_lib grade runs with OPEN_LLM_LAB_ALL_MISTAKES=1 "
            "(a sample of 2 per lab runs in test_course_lib_grade_agrees)"
        )
    _grade_agrees(lab, tmp_path, range(len(load_mistakes(lab))))


def _grade_agrees(lab, tmp_path, which) -> None:
    import shutil

    from course_lib.grading import grade_lab

    course = tmp_path / "course"
    shutil.copytree(REPO / "solutions" / lab, course / "solutions" / lab)
    shutil.copytree(REPO / "labs" / lab, course / "labs" / lab)
    subs = {"solution": grading.lab_source(lab, REPO), "blank": REPO / "labs" / lab / f"{lab}.ipynb"}
    mistakes = load_mistakes(lab)
    for i in which:
        m = mistakes[i]
        subs[("mistake-" + _mistake_id(i, m))[:60]] = apply_mistake(lab, m, tmp_path / f"{i:02d}.ipynb")
    for student, src in subs.items():
        dest = course / "submitted" / student / lab
        dest.mkdir(parents=True)
        shutil.copy(src, dest / f"{lab}.ipynb")
    results = {
        r.student: r
        for r in grade_lab(lab, workers=2, course_root=course, progress=False, print_fn=lambda *a: None)
    }
    assert set(results) == set(subs)

    def lost(r):
        return {g: t["reason"][:200] for g, t in r.tests.items() if not t["passed"]}

    sol = results["solution"]
    assert sol.max_score > 0 and sol.score == sol.max_score, f"solution lost points: {lost(sol)}; {sol.notes}"
    earned = {g: t["points"] for g, t in results["blank"].tests.items() if t["points"] > 0}
    assert results["blank"].score == 0, f"the blank release earned points on {earned}"
    mistakes = {s: r for s, r in results.items() if s.startswith("mistake-")}
    not_graded = {s: r.not_graded for s, r in mistakes.items() if not r.graded}
    full = [s for s, r in mistakes.items() if r.graded and r.score >= r.max_score]
    assert not not_graded, f"course_lib grade could not grade: {not_graded}"
    assert not full, (
        f"{len(full)} of {len(mistakes)} mistakes scored full marks under course_lib grade: {full}"
    )
