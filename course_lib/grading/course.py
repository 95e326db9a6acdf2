"""nbgrader plumbing: release labs and autograde notebooks in a throwaway course directory.

The instructor's source lives in ``solutions/<lab>/<lab>.ipynb``; ``release`` runs nbgrader's
``generate_assignment`` and writes the student version to ``labs/<lab>/``. ``autograde`` grades
any set of notebooks for one lab in a temporary course directory (its own gradebook), so tests
and dry runs never touch a real gradebook, and returns the scores as plain data.

    >>> from course_lib import grading
    >>> "lab00_pytorch_warmup" in grading.list_labs()
    True
    >>> grading.autograde("lab00_pytorch_warmup", {"alice": "alice.ipynb"})  # doctest: +SKIP
    {'alice': GradeResult(student='alice', tests={...}, ...)}
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..paths import REPO_ROOT
from .ids import check_student_id
from .results import GradeResult


def _fast_alembic_version() -> None:
    """Make nbgrader's gradebook fast and independent of ``PATH``.

    nbgrader's Gradebook asks for the database schema's head revision on every open by
    running the ``alembic heads`` command in a subprocess (1-2 s each, far more on a busy
    machine). Read the same revision once, in-process, from nbgrader's own migration scripts."""
    import functools

    import nbgrader.api as nb_api

    # nbgrader runs the `alembic` command found on PATH when it creates a gradebook; when this
    # environment's python is called by its full path (.venv/bin/python) without activating it,
    # that folder is not on PATH. Put it there (here, when a gradebook is about to be used, not
    # at import time).
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if getattr(nb_api.get_alembic_version, "_olm_fast", False):
        return
    original = nb_api.get_alembic_version

    @functools.lru_cache(maxsize=1)
    def head() -> str:
        try:
            import nbgrader.alembic as migrations
            from alembic.config import Config as AlembicConfig
            from alembic.script import ScriptDirectory

            cfg = AlembicConfig()
            cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
            return ScriptDirectory.from_config(cfg).get_current_head()
        except Exception:  # noqa: BLE001 - fall back to nbgrader's own way
            return original()

    head._olm_fast = True
    nb_api.get_alembic_version = head


__all__ = [
    "REPO_ROOT",
    "GradeResult",
    "list_labs",
    "lab_source",
    "release",
    "generate_student_version",
    "autograde",
    "course_config",
    "ensure_assignment",
]


def list_labs(root: Path = REPO_ROOT) -> list[str]:
    """Names of the labs that have an nbgrader source notebook in ``solutions/``."""
    src = Path(root) / "solutions"
    return (
        sorted(p.name for p in src.iterdir() if p.is_dir() and (p / f"{p.name}.ipynb").exists())
        if src.exists()
        else []
    )


def lab_source(lab: str, root: Path = REPO_ROOT) -> Path:
    """Path of a lab's instructor notebook; a clear error lists the labs that exist."""
    if not isinstance(lab, str) or not lab:
        raise TypeError(f"lab must be a lab name such as 'lab00_pytorch_warmup', got {lab!r}")
    path = Path(root) / "solutions" / lab / f"{lab}.ipynb"
    if not path.exists():
        raise ValueError(f"no lab named {lab!r}: expected {path}. Labs: {list_labs(root)}")
    return path


def course_config(root: Path):
    """The repository's nbgrader configuration, re-rooted at course directory ``root``."""
    from traitlets.config import Config, PyFileConfigLoader

    loader = PyFileConfigLoader("nbgrader_config.py", path=str(REPO_ROOT))
    cfg: Config = loader.load_config()
    cfg.CourseDirectory.root = str(root)
    cfg.CourseDirectory.db_url = f"sqlite:///{Path(root) / 'gradebook.db'}"
    return cfg


@contextlib.contextmanager
def _quiet_nbgrader():
    """nbgrader logs every step at INFO; keep a test run or notebook readable."""
    loggers = [logging.getLogger(n) for n in ("traitlets", "nbgrader", "NbGraderAPI")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, old):
            lg.setLevel(lv)


def _api(root: Path):
    _fast_alembic_version()
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    cfg = course_config(root)
    coursedir = CourseDirectory(config=cfg)
    api = NbGraderAPI(coursedir=coursedir, config=cfg)
    api.log.setLevel(logging.ERROR)
    return api


def _normalize_file(path: Path) -> None:
    import nbformat

    from ..notebooks import write

    write(nbformat.read(str(path), as_version=4), path)


def generate_student_version(lab: str, out_dir: Path, root: Path = REPO_ROOT) -> Path:
    """Run nbgrader's generate_assignment for ``lab`` into ``out_dir/<lab>/`` (normalised).

    Works in a temporary course directory, so the repository's gradebook is never touched.
    Returns the path of the generated student notebook.
    """
    src = lab_source(lab, root)
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="olm-release-") as tmp:
        course = Path(tmp)
        shutil.copytree(
            src.parent,
            course / "solutions" / lab,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
        )
        with _quiet_nbgrader():
            result = _api(course).generate_assignment(lab, force=True, create=True)
        if not result.get("success"):
            raise RuntimeError(
                f"nbgrader generate_assignment failed for {lab}:\n{result.get('error') or result.get('log')}"
            )
        generated = course / "labs" / lab
        target = out_dir / lab
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(generated, target)
    notebook = target / f"{lab}.ipynb"
    _normalize_file(notebook)
    return notebook


def release(lab: str, root: Path = REPO_ROOT) -> Path:
    """Regenerate ``labs/<lab>/`` from ``solutions/<lab>/`` (the only way labs/ changes)."""
    return generate_student_version(lab, Path(root) / "labs", root)


def autograde(
    lab: str,
    submissions: dict[str, str | os.PathLike],
    root: Path = REPO_ROOT,
    workdir: str | os.PathLike | None = None,
) -> dict[str, GradeResult]:
    """Autograde notebooks for ``lab`` with nbgrader in a fresh course directory.

    Parameters
    ----------
    lab : str
        Lab name, e.g. "lab00_pytorch_warmup".
    submissions : dict
        ``{student_id: path to that student's .ipynb}``.
    workdir : path or None
        Keep the course directory here (for inspecting feedback); default: a temp dir removed
        afterwards.

    Returns
    -------
    ``{student_id: GradeResult}``. A submission that nbgrader could not grade at all is never
    dropped: its result has ``not_graded`` set to the reason and no points.

    Note: this runs student code as the current user with no sandbox. It is meant for the
    course's own tests and for trusted dry runs.
    """
    if not submissions:
        raise ValueError("submissions is empty: pass {student_id: notebook path}")
    for student, path in submissions.items():
        check_student_id(student)
        if not Path(path).is_file():
            raise FileNotFoundError(f"submission of {student!r} not found: {path}")
    src = lab_source(lab, root)
    ctx = (
        contextlib.nullcontext(str(workdir))
        if workdir is not None
        else tempfile.TemporaryDirectory(prefix="olm-grade-")
    )
    results: dict[str, GradeResult] = {}
    with ctx as tmp:
        course = Path(tmp)
        course.mkdir(parents=True, exist_ok=True)
        shutil.copytree(
            src.parent,
            course / "solutions" / lab,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
        )
        api = _api(course)
        with _quiet_nbgrader():
            gen = api.generate_assignment(lab, force=True, create=True)
        if not gen.get("success"):
            raise RuntimeError(f"nbgrader generate_assignment failed for {lab}:\n{gen.get('error')}")
        for student, path in submissions.items():
            dest = course / "submitted" / student / lab
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest / f"{lab}.ipynb")
            with _quiet_nbgrader():
                res = api.autograde(lab, student, force=True, create=True)
            results[student] = _read_grade(
                course,
                lab,
                student,
                None if res.get("success") else (res.get("error") or res.get("log") or "autograde failed"),
            )
    return results


def _read_grade(course: Path, lab: str, student: str, error: str | None) -> GradeResult:
    _fast_alembic_version()
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            sub = gb.find_submission(lab, student)
        except MissingEntry:
            return GradeResult(student, not_graded=error or "no submission recorded")
        tests = {}
        for nb in sub.notebooks:
            for grade in nb.grades:
                if grade.max_score:
                    score, top = float(grade.score), float(grade.max_score)
                    tests[grade.name] = {
                        "points": score,
                        "max": top,
                        "passed": score >= top,
                        "reason": "passed" if score >= top else "failed",
                    }
        return GradeResult(student, tests, not_graded=error)


def ensure_assignment(lab: str, course: Path) -> None:
    """Make sure the gradebook of ``course`` knows ``lab`` (generate_assignment in a scratch
    copy, so the committed labs/ files are left alone)."""
    from nbgrader.api import Gradebook, MissingEntry

    _fast_alembic_version()
    db_url = course_config(course).CourseDirectory.db_url
    with Gradebook(db_url) as gb:
        try:
            gb.find_assignment(lab)
            return
        except MissingEntry:
            pass
    with tempfile.TemporaryDirectory(prefix="olm-gen-") as tmp:
        shutil.copytree(Path(course) / "solutions" / lab, Path(tmp) / "solutions" / lab)
        cfg = course_config(Path(tmp))
        cfg.CourseDirectory.db_url = db_url
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory

        with _quiet_nbgrader():
            res = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg).generate_assignment(
                lab, force=True, create=True
            )
        if not res.get("success"):
            raise RuntimeError(f"nbgrader generate_assignment failed: {res.get('error')}")
