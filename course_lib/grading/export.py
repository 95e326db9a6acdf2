"""The grade export (CSV) and the terminal summary: the only places student text is shown.

The export lists the whole class from the gradebook, so grading one student (``--student``)
or a run where some submissions could not be graded never drops anyone's row: a student
graded in this run gets this run's failed tests and notes; a student whose grading failed in
this run keeps the grade the gradebook has, with the reason in ``status``. Every cell is made
spreadsheet-safe and every printed line terminal-safe (:mod:`.ids`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .ids import printable, spreadsheet_safe
from .results import GradeResult

__all__ = ["export_grades", "print_summary", "COLUMNS"]

COLUMNS = ["student", "lab", "score", "max_score", "status", "failed_tests", "notes"]


def _gradebook_scores(lab: str, course: Path) -> dict[str, tuple[float, float]]:
    from nbgrader.api import Gradebook, MissingEntry

    from .course import _fast_alembic_version, course_config

    _fast_alembic_version()
    db = course_config(course).CourseDirectory.db_url
    if not (Path(course) / "gradebook.db").exists():
        return {}
    with Gradebook(db) as gb:
        try:
            assignment = gb.find_assignment(lab)
        except MissingEntry:
            return {}
        return {s.student.id: (float(s.score), float(s.max_score)) for s in assignment.submissions}


def export_grades(lab: str, results: list[GradeResult], course: Path, path: str | os.PathLike) -> Path:
    """Write ``path`` (CSV, :data:`COLUMNS`) for the whole class of ``lab``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recorded = _gradebook_scores(lab, course)
    this_run = {r.student: r for r in results}
    rows = []
    for student in sorted(set(recorded) | set(this_run)):
        r = this_run.get(student)
        score, top = recorded.get(student, (None, None))
        if r is not None and r.graded:
            status = "graded"
            failed = " | ".join(f"{g}: {why}" for g, why in r.failed().items())
            notes = " | ".join(r.notes)
            if score is None:
                score, top = r.score, r.max_score
        elif r is not None:
            status = f"not graded in this run: {r.not_graded}"
            if score is not None:
                status += " (score from the gradebook)"
            failed, notes = "", " | ".join(r.notes)
        else:
            status, failed, notes = "from the gradebook (not graded in this run)", "", ""
        rows.append(
            [
                student,
                lab,
                "" if score is None else f"{score:g}",
                "" if top is None else f"{top:g}",
                status,
                failed,
                notes,
            ]
        )
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for row in rows:
            w.writerow([spreadsheet_safe(cell) for cell in row])
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def print_summary(results: list[GradeResult], print_fn=print) -> None:
    """One terminal-safe line per submission of this run."""
    width = max([len(printable(r.student)) for r in results] + [7])
    print_fn(f"{'student':<{width}}  score    time  notes")
    for r in results:
        name = printable(r.student)
        if not r.graded:
            print_fn(f"{name:<{width}}  NOT GRADED      {printable(r.not_graded, 90)}")
            continue
        note = printable("; ".join(r.notes), 70)
        print_fn(f"{name:<{width}}  {r.score:>4g}/{r.max_score:<4g} {r.seconds:>5.1f}s  {note}")
    missing = sum(not r.graded for r in results)
    if missing:
        print_fn(
            f"{missing} submission(s) NOT GRADED: nothing was recorded for them (earlier "
            "grades are kept); fix the reason shown and grade them again with --student ID"
        )
