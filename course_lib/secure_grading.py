"""``python -m course_lib grade LAB``: autograding that a submission cannot fool, in parallel.

Plain ``nbgrader autograde`` runs student code in the grader's own process tree, next to the
gradebook and the instructor's source, and lets that code influence its own verdict. Here each
submission is graded in two halves that never share a process:

1. **Sandbox** (:mod:`course_lib.sandbox`): the student's cells run in a kernel that sees only
   this submission (no gradebook, no ``solutions/``, no other students, no network, an
   unprivileged user, memory/CPU/time limits, a scrubbed environment).
2. **Verifier** (a worker process that never runs student code): runs the instructor's
   notebook from ``solutions/`` (setup cells, visible *and* hidden tests), with every name a
   solution cell defines bound to a :class:`~course_lib.remote.Remote` proxy, so tests see only
   plain data computed by the student's code (:mod:`course_lib.remote`).

Before either half runs, nbgrader's own sanitising preprocessors restore locked and deleted
cells from the gradebook (``OverwriteCells`` with ``add_missing_cells``, source checksums,
``DeduplicateIds``). Afterwards the parent process, and only it, writes the verdicts to the
real gradebook with nbgrader's ``SaveAutoGrades`` (after a backup), generates feedback with
hidden tests removed, prints a summary and exports a CSV. A submission that crashes, loops,
exhausts memory or cannot be read gets 0 for the affected tests with a reason; it is never
dropped, and it never stops the run.
"""
from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import os
import re
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from .grading import REPO_ROOT

__all__ = ["grade_lab", "grade_submission", "find_submissions", "SubmissionResult"]

_MAGIC = re.compile(r"^\s*[%!]")


@dataclass
class SubmissionResult:
    """What the verifier decided for one submission (plain data, safe to pass between processes)."""

    student: str
    tests: dict[str, dict] = field(default_factory=dict)   # grade_id -> {points, max, passed, reason}
    notebook: dict | None = None                            # executed, sanitised notebook (nbformat)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(t["points"] for t in self.tests.values())

    @property
    def max_score(self) -> float:
        return sum(t["max"] for t in self.tests.values())


# ---------------------------------------------------------------------------------------------
# finding submissions
def find_submissions(lab: str, submissions_dir: Path, student: str | None = None) -> dict[str, Path]:
    """``{student: notebook}`` from nbgrader's layout ``DIR/<student>/<lab>/<lab>.ipynb``
    (or the flat layout ``DIR/<student>.ipynb``)."""
    submissions_dir = Path(submissions_dir)
    if not submissions_dir.is_dir():
        raise FileNotFoundError(f"submissions folder not found: {submissions_dir}; expected "
                                f"{submissions_dir}/<student>/{lab}/{lab}.ipynb")
    found: dict[str, Path] = {}
    for sdir in sorted(p for p in submissions_dir.iterdir() if p.is_dir()):
        nb = sdir / lab / f"{lab}.ipynb"
        if nb.exists():
            found[sdir.name] = nb
        elif (sdir / lab).is_dir():
            found[sdir.name] = nb  # folder without the notebook: graded as missing (0), not dropped
    for nb in sorted(submissions_dir.glob("*.ipynb")):
        found.setdefault(nb.stem, nb)
    bad = [s for s in found if not re.fullmatch(r"[A-Za-z0-9_.-]+", s)]
    if bad:
        raise ValueError(f"student ids must be letters, digits, '.', '_' or '-': {bad}")
    if student is not None:
        if student not in found:
            raise ValueError(f"no submission of {student!r} for {lab} in {submissions_dir}; "
                             f"found {sorted(found)[:20]}")
        found = {student: found[student]}
    return found


# ---------------------------------------------------------------------------------------------
# phase 1: one submission (runs in a worker process)
def _nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _is_test(cell) -> bool:
    m = _nbgrader_meta(cell)
    return bool(m.get("grade")) and not m.get("solution") and cell.get("cell_type") == "code"


def _is_solution(cell) -> bool:
    m = _nbgrader_meta(cell)
    return bool(m.get("solution")) and cell.get("cell_type") == "code"


def _defined_names(source: str) -> tuple[list[str], list[str]]:
    """(callables, values) bound at top level by a solution cell's source."""
    try:
        tree = ast.parse("\n".join("pass" if _MAGIC.match(ln) else ln for ln in source.splitlines()))
    except SyntaxError:
        return [], []
    callables, values = [], []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            callables.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        values.append(n.id)
    return callables, values


def _sanitize(nb, lab: str, student: str, db_url: str, config):
    """nbgrader's own sanitising steps, reading (never writing) the gradebook."""
    from .grading import _fast_alembic_version

    _fast_alembic_version()
    from nbgrader.preprocessors import (CheckCellMetadata, ClearOutput, DeduplicateIds,
                                        OverwriteCells, OverwriteKernelspec)

    resources = {"nbgrader": {"db_url": db_url, "assignment": lab, "notebook": lab,
                              "student": student}, "unique_key": lab}
    for cls in (ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata):
        nb, resources = cls(config=config).preprocess(nb, resources)
    return nb


class _TrustedRunner:
    """Executes instructor code (from solutions/) in this process's own namespace."""

    def __init__(self):
        self.ns: dict = {"__name__": "__main__"}

    def run(self, source: str, name: str, max_chars: int = 20_000) -> dict:
        code = "\n".join("pass" if _MAGIC.match(ln) else ln for ln in source.splitlines())
        out, err = io.StringIO(), io.StringIO()
        ename = evalue = exc = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                exec(compile(code, f"<{name}>", "exec"), self.ns)  # noqa: S102 - instructor code
            except BaseException as e:  # noqa: BLE001 - a failing test is data, not a crash
                if isinstance(e, KeyboardInterrupt):
                    raise
                ename, evalue, exc = type(e).__name__, str(e), e
        text = out.getvalue()
        if len(text) > max_chars:
            text = text[:max_chars] + "\n... (output truncated)\n"
        return {"stdout": text, "ename": ename, "evalue": evalue, "exc": exc}


def _outputs_for_test(res: dict) -> list[dict]:
    outs = []
    if res["stdout"]:
        outs.append({"output_type": "stream", "name": "stdout", "text": res["stdout"]})
    if res["ename"]:
        # Only the exception's type and message: a traceback would quote hidden test source.
        outs.append({"output_type": "error", "ename": res["ename"], "evalue": res["evalue"] or "",
                     "traceback": [f"{res['ename']}: {res['evalue'] or ''}"]})
    return outs


class _Sandbox:
    """The student's side: a sandbox kernel, restarted (up to 3 times) and replayed if student
    code kills it, so one crashing function costs only its own tests."""

    def __init__(self, course_root: Path, limits, keep: list[str]):
        self.course_root, self.limits, self.keep = course_root, limits, keep
        self.kernel = self.session = None
        self.history: list[str] = []
        self.restarts = 0
        self.max_restarts = 3
        self.notes: list[str] = []

    def start(self):
        from .remote import RemoteSession
        from .sandbox import KernelDied, SandboxKernel, shared_zygote

        zygote = None
        try:  # a warm parent that forks kernels: saves ~2.5 s of imports per submission
            zygote = shared_zygote(self.course_root, self.keep)
        except (KernelDied, OSError) as e:
            self.notes.append(f"no warm zygote ({str(e)[:200]}); started a cold kernel")
        kernel = None
        try:
            kernel = SandboxKernel(self.course_root, self.limits, keep=self.keep, zygote=zygote)
            self.kernel = kernel.start()
        except KernelDied as e:  # before any student code ran: a cold kernel is a safe retry
            if kernel is not None:
                kernel.stop()
            if zygote is None:
                raise
            self.notes.append(f"the warm zygote could not fork a kernel ({str(e)[:200]}); "
                              "started a cold kernel")
            self.kernel = SandboxKernel(self.course_root, self.limits, keep=self.keep).start()
        self.session = RemoteSession(self.kernel, self.limits.call_timeout_s)
        self.session.install()

    def revive(self, reason: str) -> bool:
        """After a death: restart and replay the cells that ran cleanly before."""
        from .sandbox import KernelDied

        self.notes.append(f"sandbox kernel died ({reason[:200]})")
        if self.restarts >= self.max_restarts:
            return False
        self.restarts += 1
        self.stop()
        try:
            self.start()
            for src in self.history:
                self.kernel.execute(src)
            self.notes.append("restarted the kernel and replayed the cells that had run cleanly")
            return True
        except (KernelDied, RuntimeError) as e:
            self.notes.append(f"could not restart the sandbox: {e}")
            self.session.dead_reason = f"the kernel died again ({e})"
            return False

    def run_cell(self, source: str) -> list[dict]:
        from .sandbox import KernelDied

        if self.session.dead_reason:
            return [{"output_type": "error", "ename": "KernelDied", "evalue": self.session.dead_reason,
                     "traceback": []}]
        try:
            r = self.kernel.execute(source)
        except KernelDied as e:
            if not self.revive(str(e)):
                self.session.dead_reason = f"the kernel died ({e})"
            return [{"output_type": "error", "ename": "KernelDied",
                     "evalue": f"this cell stopped the kernel: {str(e)[:300]}", "traceback": []}]
        if r["status"] == "ok":
            self.history.append(source)
        elif not any(o.get("output_type") == "error" for o in r["outputs"]):
            # The reply says the cell failed even if its error message has not arrived on
            # IOPub: the reply decides (a failing in-sandbox test must never read as a pass).
            r["outputs"].append({"output_type": "error", "ename": str(r.get("ename") or "Error"),
                                 "evalue": str(r.get("evalue") or f"status {r['status']}"),
                                 "traceback": []})
        return r["outputs"]

    def run_test_inside(self, source: str) -> dict:
        """Run a test cell in the student's kernel (nbgrader's way, but sandboxed); return the
        verdict in the trusted runner's format. Used only for tests that must hand objects to
        student code."""
        outs = self.run_cell(source)
        text = "".join(o.get("text", "") for o in outs if o.get("output_type") == "stream"
                       and o.get("name") == "stdout")[:20_000]
        err = next((o for o in outs if o.get("output_type") == "error"), None)
        return {"stdout": text, "ename": err["ename"] if err else None,
                "evalue": err["evalue"] if err else None, "exc": None}

    def after_remote_failure(self):
        if self.session.dead_reason and self.revive(self.session.dead_reason):
            self.session.dead_reason = None

    def stop(self):
        if self.kernel is not None:
            self.kernel.stop()


def grade_submission(lab: str, student: str, submission: str | None, course_root: str,
                     limits: dict | None = None) -> dict:
    """Grade one submission (sanitise, run in the sandbox, verify in this process).

    Returns :class:`SubmissionResult` as a dict. Never raises for a broken submission: every
    problem becomes a reason attached to 0 points.
    """
    import nbformat

    from .grading import course_config
    from .remote import Remote, StudentCodeError, Unsendable
    from .sandbox import KernelDied, SandboxLimits

    t0 = time.time()
    course = Path(course_root)
    result = SubmissionResult(student)
    source_nb = nbformat.read(str(course / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    tests = [c for c in source_nb.cells if _is_test(c)]
    for c in tests:
        m = _nbgrader_meta(c)
        result.tests[m["grade_id"]] = {"points": 0.0, "max": float(m.get("points", 0)),
                                       "passed": False, "reason": "not graded"}
    if submission is None or not Path(submission).exists():
        for t in result.tests.values():
            t["reason"] = "no notebook submitted"
        result.notes.append("no notebook submitted")
        result.seconds = time.time() - t0
        return asdict(result)
    cfg = course_config(course)
    try:
        raw = Path(submission).read_text(encoding="utf-8")
        student_nb = nbformat.reads(raw, as_version=4)
        student_nb = _sanitize(student_nb, lab, student, cfg.CourseDirectory.db_url, cfg)
    except Exception as e:  # noqa: BLE001 - unreadable or malformed: 0 with the reason
        for t in result.tests.values():
            t["reason"] = f"the notebook could not be read: {type(e).__name__}: {str(e)[:200]}"
        result.notes.append(f"unreadable notebook: {type(e).__name__}: {str(e)[:300]}")
        result.seconds = time.time() - t0
        return asdict(result)

    limits_obj = SandboxLimits(**(limits or {}))
    public = course / "labs" / lab
    sandbox = _Sandbox(course, limits_obj, keep=[str(public)] if public.exists() else [])
    trusted = _TrustedRunner()
    stu_cells = [c for c in student_nb.cells if c.cell_type == "code"]
    pos = 0
    count = 0

    def run_student(until_id: str | None, inclusive: bool):
        """Run student cells in order up to the cell with grade_id ``until_id``."""
        nonlocal pos, count
        while pos < len(stu_cells):
            c = stu_cells[pos]
            gid = _nbgrader_meta(c).get("grade_id")
            if until_id is not None and gid == until_id and not inclusive:
                return
            pos += 1
            if not _is_test(c):
                count += 1
                c.outputs = [nbformat.from_dict(o) for o in sandbox.run_cell(c.source)]
                c.execution_count = count
            if until_id is not None and gid == until_id:
                return

    try:
        sandbox.start()
    except (KernelDied, RuntimeError) as e:
        for t in result.tests.values():
            t["reason"] = f"the sandbox could not start: {str(e)[:200]}"
        result.notes.append(f"sandbox failed to start: {e}")
        result.seconds = time.time() - t0
        return asdict(result)
    try:
        for cell in source_nb.cells:
            if cell.cell_type != "code":
                continue
            gid = _nbgrader_meta(cell).get("grade_id")
            if _is_solution(cell):
                run_student(gid, inclusive=True)
                callables, values = _defined_names(cell.source)
                for name in callables:
                    trusted.ns[name] = Remote(sandbox.session, name=name)
                for name in values:
                    try:
                        trusted.ns[name] = _fetch_value(sandbox.session, name)
                    except StudentCodeError:
                        trusted.ns.pop(name, None)
            elif _is_test(cell):
                run_student(gid, inclusive=False)
                res = trusted.run(cell.source, gid)
                if isinstance(res["exc"], Unsendable):
                    # This test hands student code an object (a model, a function), which
                    # cannot cross the data boundary: judge it inside the sandbox instead.
                    res = sandbox.run_test_inside(cell.source)
                    result.notes.append(f"{gid}: verdict computed inside the sandbox (the test "
                                        "passes objects to student code)")
                t = result.tests[gid]
                t["passed"] = res["ename"] is None
                t["points"] = t["max"] if t["passed"] else 0.0
                t["reason"] = "passed" if t["passed"] else f"{res['ename']}: {res['evalue']}"[:500]
                student_cell = next((c for c in stu_cells if _nbgrader_meta(c).get("grade_id") == gid), None)
                if student_cell is not None:
                    count += 1
                    student_cell.outputs = [nbformat.from_dict(o) for o in _outputs_for_test(res)]
                    student_cell.execution_count = count
                sandbox.after_remote_failure()
            else:
                res = trusted.run(cell.source, gid or "setup")
                if res["ename"] and not isinstance(res["exc"], Unsendable):
                    # later tests that need this cell will fail: say why (an Unsendable here is
                    # expected: the tests that need it are then judged inside the sandbox)
                    result.notes.append(f"a provided cell failed in the verifier: {res['ename']}: "
                                        f"{str(res['evalue'])[:200]}")
    finally:
        sandbox.stop()
    result.notes += sandbox.notes
    result.notebook = json.loads(nbformat.writes(student_nb))
    result.seconds = time.time() - t0
    return asdict(result)


def _fetch_value(session, name: str):
    """A solution cell's data value (an answer like ``n_params = 1234``) as plain data."""
    return session.request({"op": "get", "name": name})


# ---------------------------------------------------------------------------------------------
# phase 2: the gradebook (parent process only)
def _record(lab: str, results: list[SubmissionResult], course: Path, submissions: dict[str, Path]):
    """Write verdicts with nbgrader's SaveAutoGrades, then feedback; returns the API log."""
    import nbformat
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from .grading import _fast_alembic_version, course_config

    _fast_alembic_version()
    stage_rel = Path(".olm-grading") / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    stage = course / stage_rel
    for r in results:
        dest = stage / r.student / lab
        dest.mkdir(parents=True, exist_ok=True)
        nb = nbformat.from_dict(r.notebook) if r.notebook else None
        if nb is None:  # unreadable or missing: grade the release so every test records 0
            nb = nbformat.read(str(course / "labs" / lab / f"{lab}.ipynb"), as_version=4)
            for c in nb.cells:
                if _is_test(c):
                    c.outputs = [nbformat.from_dict({
                        "output_type": "error", "ename": "NotGraded", "traceback": [],
                        "evalue": r.tests.get(_nbgrader_meta(c).get("grade_id"), {}).get("reason", "not graded")})]
        nbformat.write(nb, str(dest / f"{lab}.ipynb"))
        ts = submissions.get(r.student)
        if ts is not None and (ts.parent / "timestamp.txt").exists():
            shutil.copy(ts.parent / "timestamp.txt", dest / "timestamp.txt")
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
    errors = {}
    try:
        # One nbgrader run for the whole class (its app start-up and gradebook checks are slow).
        res = api.autograde(lab, "*", force=True, create=True)
        if res.get("success"):
            fb = api.generate_feedback(lab, "*", force=True)
            if not fb.get("success"):
                errors["*"] = "feedback: " + str(fb.get("error"))[:300]
        else:  # fall back to one student at a time so one bad entry cannot sink the class
            for r in results:
                one = api.autograde(lab, r.student, force=True, create=True)
                if not one.get("success"):
                    errors[r.student] = one.get("error") or one.get("log")
                else:
                    api.generate_feedback(lab, r.student, force=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        with contextlib.suppress(OSError):
            stage.parent.rmdir()
    # Check every student landed in the gradebook with the verdict decided above.
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(cfg.CourseDirectory.db_url) as gb:
        for r in results:
            try:
                got = gb.find_submission(lab, r.student).score
                if abs(got - r.score) > 1e-9:
                    errors[r.student] = f"gradebook has {got}, verifier decided {r.score}"
            except MissingEntry:
                errors[r.student] = errors.get("*", "not recorded")
    errors.pop("*", None)
    return errors


def ensure_assignment(lab: str, course: Path) -> None:
    """Make sure the gradebook knows ``lab`` (generate_assignment in a scratch copy, so the
    committed labs/ files are left alone)."""
    import tempfile

    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from .grading import _fast_alembic_version, course_config

    _fast_alembic_version()
    db_url = course_config(course).CourseDirectory.db_url
    with Gradebook(db_url) as gb:
        try:
            gb.find_assignment(lab)
            return
        except MissingEntry:
            pass
    with tempfile.TemporaryDirectory(prefix="olm-gen-") as tmp:
        shutil.copytree(course / "solutions" / lab, Path(tmp) / "solutions" / lab)
        cfg = course_config(Path(tmp))
        cfg.CourseDirectory.db_url = db_url
        res = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg).generate_assignment(
            lab, force=True, create=True)
        if not res.get("success"):
            raise RuntimeError(f"nbgrader generate_assignment failed: {res.get('error')}")


def grade_lab(lab: str, submissions_dir: str | os.PathLike | None = None, workers: int = 2,
              student: str | None = None, course_root: str | os.PathLike = REPO_ROOT,
              limits: dict | None = None, csv_path: str | os.PathLike | None = None,
              progress: bool = True, print_fn=print) -> list[SubmissionResult]:
    """Grade every submission of ``lab`` (see the module docstring); returns the results.

    Parameters
    ----------
    lab : str
    submissions_dir : path, default ``<course>/submitted``
    workers : int >= 1, submissions graded in parallel
    student : str or None, grade only this student
    course_root : path of the nbgrader course (``solutions/``, ``labs/``, ``gradebook.db``)
    limits : dict of :class:`~course_lib.sandbox.SandboxLimits` fields
    csv_path : where to export grades, default ``<course>/grades/<lab>.csv``
    """
    from tqdm.auto import tqdm

    from .grading import lab_source
    from .sandbox import SandboxLimits, isolation_level

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    course = Path(course_root).resolve()
    lab_source(lab, course)
    SandboxLimits(**(limits or {}))  # validate early, with a clear message
    subs_dir = Path(submissions_dir) if submissions_dir else course / "submitted"
    submissions = find_submissions(lab, subs_dir, student)
    if not submissions:
        raise ValueError(f"no submissions for {lab} in {subs_dir}")
    level = isolation_level()
    if level != "namespaces":
        print_fn("WARNING: OS-level isolation is unavailable (it needs root and `unshare` on Linux). "
                 "Student code still runs in a separate kernel with memory/CPU/time limits, a "
                 "scrubbed environment and verdicts computed outside it, but it can read any file "
                 "your user can read (gradebook, solutions/). Grade untrusted work on a Linux "
                 "machine as root (a container or CI job).")
    db = course / "gradebook.db"
    if db.exists():
        backup = course / f"gradebook.db.bak-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        shutil.copy2(db, backup)
        print_fn(f"gradebook backed up to {backup.name}")
    ensure_assignment(lab, course)

    results: dict[str, SubmissionResult] = {}
    jobs = {s: (lab, s, str(p) if p.exists() else None, str(course), limits) for s, p in submissions.items()}
    bar = tqdm(total=len(jobs), desc=f"grading {lab}", unit="submission", disable=not progress)
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(grade_submission, *args): s for s, args in jobs.items()}
        for fut in as_completed(futures):
            s = futures[fut]
            try:
                results[s] = SubmissionResult(**fut.result())
            except Exception as e:  # noqa: BLE001 - a crashed worker still yields a grade
                try:  # the verifier runs no student code, so retrying it here is safe
                    r = SubmissionResult(**grade_submission(*jobs[s]))
                    r.notes.append(f"graded in the main process after a worker failed ({type(e).__name__})")
                except Exception as e2:  # noqa: BLE001
                    r = SubmissionResult(**grade_submission(lab, s, None, str(course)))
                    r.notes = [f"grading failed: {type(e).__name__}: {e}; then {type(e2).__name__}: {e2}"]
                    for t in r.tests.values():
                        t["reason"] = f"grading failed: {type(e2).__name__}"
                results[s] = r
            bar.update(1)
    bar.close()
    ordered = [results[s] for s in sorted(results)]
    errors = _record(lab, ordered, course, submissions)
    for s, err in errors.items():
        results[s].notes.append(f"nbgrader could not record this grade: {str(err)[:300]}")
    _export(lab, ordered, Path(csv_path) if csv_path else course / "grades" / f"{lab}.csv", print_fn)
    return ordered


def _export(lab: str, results: list[SubmissionResult], path: Path, print_fn) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "lab", "score", "max_score", "failed_tests", "notes"])
        for r in results:
            failed = [f"{g}: {t['reason']}" for g, t in r.tests.items() if not t["passed"]]
            one_line = lambda parts: " ".join(" | ".join(parts).split())  # noqa: E731 - one row per student
            w.writerow([r.student, lab, f"{r.score:g}", f"{r.max_score:g}", one_line(failed),
                        one_line(r.notes)])
    width = max([len(r.student) for r in results] + [7])
    print_fn(f"{'student':<{width}}  score    time  notes")
    for r in results:
        note = "; ".join(r.notes)[:70]
        print_fn(f"{r.student:<{width}}  {r.score:>4g}/{r.max_score:<4g} {r.seconds:>5.1f}s  {note}")
    print_fn(f"grades exported to {path}")
