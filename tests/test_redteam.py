"""Red team: cheating and broken submissions against `python -m course_lib grade`.

Every submission in tests/redteam/lab00_pytorch_warmup/ must score no more than the honest
score of the work it contains (expected.yaml), the robust ones no less; the run must finish;
a classmate graded earlier keeps their grade; the gradebook is backed up; and no feedback file
contains hidden-test source.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from once import once

from course_lib.grading import grade_lab, sandbox

REPO = Path(__file__).resolve().parent.parent
LAB = "lab00_pytorch_warmup"
RED = REPO / "tests" / "redteam" / LAB
EXPECTED = yaml.safe_load((RED / "expected.yaml").read_text())

pytestmark = pytest.mark.slow
BAD_IDS = ["José", "new\nline", "has space", "-starts-with-dash", "semi;colon"]
LINKED = ["linked_to_carol", "linked_notebook"]


def _hidden_lines(lab: str) -> list[str]:
    """Distinctive source lines from every hidden-test block of the instructor notebook."""
    nb = nbformat.read(str(REPO / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    lines = []
    for c in nb.cells:
        if "### BEGIN HIDDEN TESTS" in c.source:
            block = c.source.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS")[0]
            lines += [ln.strip() for ln in block.splitlines() if len(ln.strip()) > 25][:3]
    assert lines, "lab00 should have hidden tests"
    return lines


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """(course, scores before, results by student, printed log), built once per test run."""
    return once(tmp_path_factory, "redteam", lambda: _grade_red_team(tmp_path_factory))


def _grade_red_team(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    shutil.copytree(REPO / "solutions" / LAB, course / "solutions" / LAB)
    shutil.copytree(REPO / "labs" / LAB, course / "labs" / LAB)
    # A classmate graded before the red team arrives.
    carol = course / "submitted" / "carol" / LAB
    carol.mkdir(parents=True)
    shutil.copy(REPO / "solutions" / LAB / f"{LAB}.ipynb", carol / f"{LAB}.ipynb")
    limits = {"call_timeout_s": 20.0, "memory_gb": 3.0, "cpu_seconds": 300}
    before = {
        r.student: r.score
        for r in grade_lab(
            LAB, workers=2, course_root=course, limits=limits, progress=False, print_fn=lambda *a: None
        )
    }
    (course / "victim.txt").write_text("precious")
    red = course / "redteam"
    for nb in sorted(RED.glob("*.ipynb")):
        dest = red / nb.stem / LAB
        dest.mkdir(parents=True)
        # notebooks that attack the grader's files learn where the course is
        text = nb.read_text(encoding="utf-8").replace("@@COURSE@@", str(course))
        (dest / f"{LAB}.ipynb").write_text(text, encoding="utf-8")
    # Submissions that are links: a folder linked to a classmate's, a notebook linked to the
    # instructor's solution. Both must be refused (read on the host they would score full marks).
    (red / "linked_to_carol").symlink_to(carol.parent)
    (red / "linked_notebook" / LAB).mkdir(parents=True)
    (red / "linked_notebook" / LAB / f"{LAB}.ipynb").symlink_to(course / "solutions" / LAB / f"{LAB}.ipynb")
    # Folder names that break the id rule: refused with a note, everyone else still graded.
    for bad in BAD_IDS:
        (red / bad / LAB).mkdir(parents=True)
        shutil.copy(REPO / "solutions" / LAB / f"{LAB}.ipynb", red / bad / LAB / f"{LAB}.ipynb")
    log = []
    results = grade_lab(
        LAB, red, workers=2, course_root=course, limits=limits, progress=False, print_fn=log.append
    )
    return course, before, {r.student: r for r in results}, log


def test_every_red_team_submission_is_graded(graded):
    _, _, results, _ = graded
    refused = {name for name, r in results.items() if not r.graded}
    graded_ = set(results) - refused
    assert graded_ == set(EXPECTED) | set(LINKED), set(EXPECTED) ^ graded_
    assert len(refused) == len(BAD_IDS), refused
    for name in refused:
        assert "not a valid student id" in results[name].not_graded
    assert len(results) >= 25


def test_linked_submissions_are_refused(graded):
    _, _, results, _ = graded
    for name in LINKED:
        r = results[name]
        assert r.score == 0, (name, r.score, r.notes)
        assert any("symbolic link" in n for n in r.notes), (name, r.notes)


def test_planted_links_wrote_nothing_outside(graded):
    course, _, _, _ = graded
    assert (course / "victim.txt").read_text() == "precious"


def test_student_text_is_safe_on_the_terminal(graded):
    _, _, _, log = graded
    for line in log:
        assert "\x1b" not in line and "\x07" not in line, repr(line[:200])
        assert len(line) < 400, line[:200]


def test_feedback_and_outputs_are_capped(graded):
    course, _, results, _ = graded
    fb = course / "feedback" / "huge_errors_and_displays" / LAB / f"{LAB}.html"
    assert fb.stat().st_size < 3 * 2**20, fb.stat().st_size
    graded_nb = course / "autograded" / "huge_errors_and_displays" / LAB / f"{LAB}.ipynb"
    assert graded_nb.stat().st_size < 2 * 2**20, graded_nb.stat().st_size


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_score_bounded_by_honest_work(graded, name):
    _, _, results, _ = graded
    r, exp = results[name], EXPECTED[name]
    detail = {g: t["reason"] for g, t in r.tests.items() if not t["passed"]}
    assert r.score <= exp["max_score"], (
        f"{name} ({exp['attack']}) scored {r.score} > {exp['max_score']}: {detail}"
    )
    if "min_score" in exp:
        assert r.score >= exp["min_score"], (
            f"{name} lost honest points: {r.score} < {exp['min_score']}: {detail}; {r.notes}"
        )


def test_gradebook_and_classmate_untouched(graded):
    from nbgrader.api import Gradebook

    course, before, results, _ = graded
    assert before == {"carol": 14.0}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_submission(LAB, "carol").score == 14.0
        for name, r in results.items():
            if r.graded:
                assert gb.find_submission(LAB, name).score == r.score, name
        recorded = {s.student.id for s in gb.find_assignment(LAB).submissions}
    assert recorded == {"carol"} | {n for n, r in results.items() if r.graded}
    assert list(course.glob("gradebook.db.bak-*")), "the gradebook was not backed up"


def test_no_feedback_leaks_hidden_tests(graded):
    course, _, results, _ = graded
    hidden = _hidden_lines(LAB)
    files = list((course / "feedback").rglob("*.html"))
    assert len(files) == sum(r.graded for r in results.values()) + 1
    for f in files:
        text = f.read_text(errors="replace")
        for line in hidden:
            assert line not in text, f"{f} contains hidden test source: {line!r}"


def test_sandbox_had_no_network(graded):
    course, _, _, _ = graded
    nb = nbformat.read(str(course / "autograded" / "uses_the_network" / LAB / f"{LAB}.ipynb"), as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "no network:" in printed and "NETWORK OK" not in printed


def test_csv_export_lists_the_whole_class(graded):
    """The export merges with the gradebook: the red team's run still lists carol (graded in
    an earlier run) with her grade, and every red-team submission with this run's verdict."""
    import csv

    course, _, results, _ = graded
    with open(course / "grades" / f"{LAB}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_student = {r["student"]: r for r in rows}
    graded_ = {n for n, r in results.items() if r.graded}
    assert graded_ | {"carol"} <= set(by_student)
    assert by_student["carol"]["score"] == "14"
    for name in graded_:
        assert float(by_student[name]["score"]) == results[name].score, name
        assert by_student[name]["status"] == "graded", by_student[name]
    for row in rows:  # nothing a spreadsheet would run as a formula
        for cell in row.values():
            assert cell[:1] not in ("=", "+", "-", "@"), cell[:80]


def test_isolation_level_is_reported(graded):
    _, _, _, log = graded
    if sandbox.isolation_level() == "limits-only":
        assert any("WARNING: OS-level isolation is unavailable" in line for line in log)
