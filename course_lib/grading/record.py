"""Writing verdicts: the only code that changes a course's gradebook and feedback.

Runs in the parent process, after every submission was judged. Only *graded* results arrive
here (a result with ``not_graded`` set never reaches the gradebook, so an infrastructure
failure cannot replace an earlier grade). Verdicts go in through nbgrader's own
``SaveAutoGrades`` (so late penalties, the formgrader and exports work as usual), then feedback
is generated with hidden tests removed.
"""

from __future__ import annotations

import contextlib
import shutil
from datetime import datetime
from pathlib import Path

from .results import GradeResult

__all__ = ["backup_gradebook", "record"]


def backup_gradebook(course: Path) -> Path | None:
    """Copy ``course/gradebook.db`` to ``gradebook.db.bak-<time>`` (None if there is none)."""
    db = Path(course) / "gradebook.db"
    if not db.exists():
        return None
    backup = db.with_name(f"gradebook.db.bak-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")
    shutil.copy2(db, backup)
    return backup


def _stage_notebook(lab: str, r: GradeResult, course: Path, dest: Path) -> None:
    import nbformat

    from .grade import _is_test, _nbgrader_meta

    nb = nbformat.from_dict(r.notebook) if r.notebook else None
    if nb is None:  # unreadable or missing: grade the release so every test records 0
        nb = nbformat.read(str(course / "labs" / lab / f"{lab}.ipynb"), as_version=4)
        for c in nb.cells:
            if _is_test(c):
                c.outputs = [
                    nbformat.from_dict(
                        {
                            "output_type": "error",
                            "ename": "NotGraded",
                            "traceback": [],
                            "evalue": r.tests.get(_nbgrader_meta(c).get("grade_id"), {}).get(
                                "reason", "not graded"
                            ),
                        }
                    )
                ]
    nbformat.write(nb, str(dest / f"{lab}.ipynb"))


def _copy_timestamp(subs_dir: Path, rel: str | None, dest: Path) -> None:
    """nbgrader's ``timestamp.txt`` beside the submitted notebook, read without following links."""
    from .files import UnsafeFile, read_path

    if rel is None:
        return
    ts_rel = str(Path(rel).parent / "timestamp.txt") if "/" in rel else None
    if ts_rel is None:
        return
    try:
        data = read_path(subs_dir, ts_rel, max_bytes=200)
    except (UnsafeFile, OSError):
        return
    text = data.decode("utf-8", errors="replace").strip()
    if text and all(ch.isdigit() or ch in " -:.+T" for ch in text):
        (dest / "timestamp.txt").write_text(text + "\n", encoding="utf-8")


def record(
    lab: str, results: list[GradeResult], course: Path, subs_dir: Path, submissions: dict[str, str | None]
) -> dict[str, str]:
    """Write ``results`` with nbgrader's SaveAutoGrades, then feedback; returns
    ``{student: error}`` for anything that could not be recorded as decided."""
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from .course import _fast_alembic_version, _quiet_nbgrader, course_config

    _fast_alembic_version()
    stage_rel = Path(".olm-grading") / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    stage = course / stage_rel
    for r in results:
        if not r.graded:
            raise ValueError(
                f"record() takes graded results only; {r.student} was not graded: {r.not_graded}"
            )
        dest = stage / r.student / lab
        dest.mkdir(parents=True, exist_ok=True)
        _stage_notebook(lab, r, course, dest)
        _copy_timestamp(subs_dir, submissions.get(r.student), dest)
    cfg = course_config(course)
    cfg.CourseDirectory.submitted_directory = str(stage_rel)
    cfg.Autograde.create_student = True
    cfg.Autograde.sanitize_preprocessors = ["nbgrader.preprocessors.CheckCellMetadata"]
    cfg.Autograde.autograde_preprocessors = [
        "nbgrader.preprocessors.IgnorePattern",
        "nbgrader.preprocessors.LimitOutput",
        "nbgrader.preprocessors.SaveAutoGrades",
        "nbgrader.preprocessors.AssignLatePenalties",
        "nbgrader.preprocessors.CheckCellMetadata",
    ]
    api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
    errors: dict[str, str] = {}
    try:
        with _quiet_nbgrader():
            # One nbgrader run for the whole class (its start-up and gradebook checks are
            # slow); the staging folder holds only this run's students.
            res = api.autograde(lab, "*", force=True, create=True)
            if res.get("success"):
                fb = api.generate_feedback(lab, "*", force=True)
                if not fb.get("success"):
                    for r in results:
                        errors[r.student] = "feedback: " + str(fb.get("error"))[:300]
            else:  # one student at a time, so one bad entry cannot sink the class
                for r in results:
                    one = api.autograde(lab, r.student, force=True, create=True)
                    if not one.get("success"):
                        errors[r.student] = str(one.get("error") or one.get("log"))
                    else:
                        api.generate_feedback(lab, r.student, force=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        with contextlib.suppress(OSError):
            stage.parent.rmdir()
    # Check every student landed in the gradebook with the verdict decided above.
    with Gradebook(cfg.CourseDirectory.db_url) as gb:
        for r in results:
            try:
                got = gb.find_submission(lab, r.student).score
                if abs(got - r.score) > 1e-9 and r.student not in errors:
                    errors[r.student] = f"gradebook has {got}, verifier decided {r.score}"
            except MissingEntry:
                errors.setdefault(r.student, "not recorded")
    return errors
