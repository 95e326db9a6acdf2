"""``python -m course_lib grade LAB``: autograding that a submission cannot fool, in parallel.

Plain ``nbgrader autograde`` runs student code in the grader's own process tree, next to the
gradebook and the instructor's source, and lets that code influence its own verdict. Here each
submission is graded in two halves that never share a process:

1. **Sandbox** (:mod:`.sandbox`, :mod:`.zygote`): the student's cells run in a kernel that sees
   only this submission (no gradebook, no ``solutions/``, no other students, no network, an
   unprivileged user, memory/CPU/time limits, a scrubbed environment).
2. **Verifier** (a worker process that never runs student code): runs the instructor's
   notebook from ``solutions/`` (setup cells, visible *and* hidden tests), with every name a
   solution cell defines bound to a :class:`~.remote.Remote` proxy, so tests see only plain
   data computed by the student's code (:mod:`.remote`, :mod:`.wire`).

Before either half runs, the submission is copied in as a regular file (links, FIFOs and
oversized files refused, :mod:`.files`) and nbgrader's own sanitising preprocessors restore
locked and deleted cells from the gradebook (``OverwriteCells`` with ``add_missing_cells``,
source checksums, ``DeduplicateIds``). Afterwards the parent process, and only it, writes the
verdicts to the real gradebook (:mod:`.record`, after a backup), generates feedback with hidden
tests removed and exports a CSV that merges with the gradebook (:mod:`.export`).

A submission that crashes, loops, exhausts memory or cannot be read gets 0 for the affected
tests with a reason; it is never dropped, and it never stops the run. A failure of the grader's
own (a sandbox that cannot start, a crashed worker) is retried and then reported "not graded":
it is never written over a grade.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from ..paths import REPO_ROOT
from .checks import record_student_cell, reset_student_cells
from .ids import check_student_id, is_student_id, printable
from .limits import (
    INFRA_RETRIES,
    MAX_CELL_OUTPUT_CHARS,
    MAX_NOTEBOOK_BYTES,
    MAX_REASON_CHARS,
    MAX_SUBMISSION_OUTPUT_CHARS,
    SandboxLimits,
)
from .results import GradeResult

__all__ = ["grade_lab", "grade_submission", "find_submissions", "GradeResult"]

_MAGIC_PREFIXES = ("%", "!")


# ---------------------------------------------------------------------------------------------
# finding submissions
def find_submissions(
    lab: str, submissions_dir: str | os.PathLike, student: str | None = None
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Submissions of ``lab`` in nbgrader's layout ``DIR/<student>/<lab>/<lab>.ipynb`` (or the
    flat layout ``DIR/<student>.ipynb``).

    Returns ``(found, refused)``: ``found[student]`` is the notebook's path relative to ``DIR``
    (``None`` for a student folder without the notebook: graded 0, never dropped);
    ``refused[name]`` says why a folder was not graded at all (an id that breaks the id rule).
    Nothing is followed or opened here: :mod:`.files` reads the notebook later, refusing links.
    """
    submissions_dir = Path(submissions_dir)
    if not submissions_dir.is_dir():
        raise FileNotFoundError(
            f"submissions folder not found: {submissions_dir}; expected "
            f"{submissions_dir}/<student>/{lab}/{lab}.ipynb"
        )
    if student is not None:
        check_student_id(student)
    found: dict[str, str | None] = {}
    refused: dict[str, str] = {}
    for entry in sorted(os.scandir(submissions_dir), key=lambda e: e.name):
        name = entry.name
        if entry.is_dir(follow_symlinks=False):
            sid, rel = name, f"{name}/{lab}/{lab}.ipynb"
            has_lab = os.path.lexists(os.path.join(entry.path, lab))
            if not has_lab:
                continue
        elif name.endswith(".ipynb"):
            sid, rel = name[: -len(".ipynb")], name
        elif entry.is_symlink():
            sid, rel = name, f"{name}/{lab}/{lab}.ipynb"  # refused when read: a link
        else:
            continue
        if not is_student_id(sid):
            refused[printable(sid, 80)] = (
                "refused: the folder name is not a valid student id "
                "(1-64 ASCII letters, digits, '_', '.', '-'); rename it"
            )
            continue
        if sid in found:
            continue  # the nbgrader layout wins over a flat file of the same name
        nb = os.path.join(submissions_dir, rel)
        found[sid] = rel if os.path.lexists(nb) else None
    if student is not None:
        if student not in found:
            raise ValueError(
                f"no submission of {student!r} for {lab} in {submissions_dir}; found {sorted(found)[:20]}"
            )
        found, refused = {student: found[student]}, {}
    return found, refused


# ---------------------------------------------------------------------------------------------
# the solution notebook's structure
def _nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _is_test(cell) -> bool:
    m = _nbgrader_meta(cell)
    return bool(m.get("grade")) and not m.get("solution") and cell.get("cell_type") == "code"


def _is_solution(cell) -> bool:
    m = _nbgrader_meta(cell)
    return bool(m.get("solution")) and cell.get("cell_type") == "code"


def _without_magics(source: str) -> str:
    return "\n".join("pass" if ln.lstrip().startswith(_MAGIC_PREFIXES) else ln for ln in source.splitlines())


def _defined_names(source: str) -> tuple[list[str], list[str]]:
    """(callables, values) bound at top level by a solution cell's source."""
    try:
        tree = ast.parse(_without_magics(source))
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
    from .course import _fast_alembic_version

    _fast_alembic_version()
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearOutput,
        DeduplicateIds,
        OverwriteCells,
        OverwriteKernelspec,
    )

    resources = {
        "nbgrader": {"db_url": db_url, "assignment": lab, "notebook": lab, "student": student},
        "unique_key": lab,
    }
    for cls in (ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata):
        nb, resources = cls(config=config).preprocess(nb, resources)
    return nb


# ---------------------------------------------------------------------------------------------
# the verifier's side
class _TrustedRunner:
    """Executes instructor code (from solutions/) in this process's own namespace."""

    def __init__(self):
        self.ns: dict = {"__name__": "__main__"}

    def run(self, source: str, name: str, max_chars: int = MAX_CELL_OUTPUT_CHARS) -> dict:
        out = io.StringIO()
        ename = evalue = exc = None
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            try:
                exec(compile(_without_magics(source), f"<{name}>", "exec"), self.ns)  # noqa: S102 - instructor code
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt):
                    raise
                ename, evalue, exc = type(e).__name__, str(e)[:max_chars], e
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
        outs.append(
            {
                "output_type": "error",
                "ename": res["ename"],
                "evalue": res["evalue"] or "",
                "traceback": [f"{res['ename']}: {res['evalue'] or ''}"],
            }
        )
    return outs


class InfrastructureError(RuntimeError):
    """The grader itself failed (a sandbox that cannot start): no grade may be recorded."""


class _Sandbox:
    """The student's side: a sandbox kernel, restarted (up to 3 times) and replayed if student
    code kills it, so one crashing function costs only its own tests."""

    def __init__(self, course_root: Path, limits: SandboxLimits, keep: list[str]):
        self.course_root, self.limits, self.keep = course_root, limits, keep
        self.kernel = self.session = None
        self.history: list[str] = []
        self.restarts = 0
        self.max_restarts = 3
        self.notes: list[str] = []

    def start(self):
        from .remote import RemoteSession
        from .sandbox import KernelDied, SandboxKernel, isolation_level
        from .zygote import shared_zygote

        zygote = None
        if isolation_level() != "bubblewrap":  # under bubblewrap every kernel starts cold
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
            self.notes.append(
                f"the warm zygote could not fork a kernel ({str(e)[:200]}); started a cold kernel"
            )
            self.kernel = SandboxKernel(self.course_root, self.limits, keep=self.keep).start()
        if self.session is None:
            self.session = RemoteSession(self.kernel, self.limits.call_timeout_s)
        else:  # a restart: the proxies the tests hold are bound to this same session
            self.session.attach(self.kernel)
        self.session.install()

    def start_with_retries(self, retries: int = INFRA_RETRIES) -> None:
        """Start, retrying a grader-side failure; :class:`InfrastructureError` after the last."""
        from .sandbox import KernelDied

        errors = []
        for attempt in range(retries + 1):
            try:
                self.start()
                return
            except (KernelDied, RuntimeError, OSError) as e:
                errors.append(f"{type(e).__name__}: {str(e)[:200]}")
                self.stop()
                if attempt < retries:
                    time.sleep(1.0 + attempt)
        raise InfrastructureError(f"the sandbox could not start ({len(errors)} tries): {errors[-1]}")

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
        except (KernelDied, RuntimeError, OSError) as e:
            self.notes.append(f"could not restart the sandbox: {str(e)[:200]}")
            if self.session is not None:
                self.session.dead_reason = f"the kernel died again ({str(e)[:200]})"
            return False

    def run_cell(self, source: str, timeout: float | None = None) -> list[dict]:
        from .sandbox import KernelDied

        if self.session.dead_reason:
            return [
                {
                    "output_type": "error",
                    "ename": "KernelDied",
                    "evalue": self.session.dead_reason,
                    "traceback": [],
                }
            ]
        try:
            r = self.kernel.execute(source, timeout=timeout)
        except KernelDied as e:
            if not self.revive(str(e)):
                self.session.dead_reason = f"the kernel died ({str(e)[:300]})"
            return [
                {
                    "output_type": "error",
                    "ename": "KernelDied",
                    "evalue": f"this cell stopped the kernel: {str(e)[:300]}",
                    "traceback": [],
                }
            ]
        if r["status"] == "ok":
            self.history.append(source)
        elif not any(o.get("output_type") == "error" for o in r["outputs"]):
            # The reply says the cell failed even if its error message has not arrived on
            # IOPub: the reply decides (a failing in-sandbox test must never read as a pass).
            r["outputs"].append(
                {
                    "output_type": "error",
                    "ename": str(r.get("ename") or "Error")[:200],
                    "evalue": str(r.get("evalue") or f"status {r['status']}")[:2000],
                    "traceback": [],
                }
            )
        return r["outputs"]

    def after_remote_failure(self):
        if self.session.dead_reason and self.revive(self.session.dead_reason):
            self.session.dead_reason = None

    def stop(self):
        if self.session is not None:
            self.session.close()
        if self.kernel is not None:
            self.kernel.stop()


def _fetch_value(session, name: str):
    """A solution cell's data value (an answer like ``n_params = 1234``) as plain data."""
    return session.request({"op": "get", "name": name})


def _output_chars(outputs: list[dict]) -> int:
    return sum(len(json.dumps(o, default=str)) for o in outputs)


class _Run:
    """One submission's walk through the instructor's notebook: student cells run in the
    sandbox in order, tests run here, each verdict recorded in ``result``."""

    def __init__(self, source_nb, student_nb, result: GradeResult, sandbox: _Sandbox, limits: SandboxLimits):
        import nbformat

        self.nbformat = nbformat
        self.source_nb, self.result, self.sandbox = source_nb, result, sandbox
        self.trusted = _TrustedRunner()
        self.cells = [c for c in student_nb.cells if c.cell_type == "code"]
        self.by_id = {}
        for c in self.cells:
            self.by_id.setdefault(_nbgrader_meta(c).get("grade_id"), c)
        self.pos = 0
        self.count = 0
        self.deadline = time.monotonic() + limits.submission_timeout_s
        self.call_timeout = limits.call_timeout_s
        self.output_left = MAX_SUBMISSION_OUTPUT_CHARS
        self.out_of_time = False

    def _time_left(self) -> float:
        return self.deadline - time.monotonic()

    def _set_outputs(self, cell, outputs: list[dict]) -> None:
        size = _output_chars(outputs)
        if size > self.output_left:
            outputs = [
                {
                    "output_type": "stream",
                    "name": "stdout",
                    "text": "... (output removed: this submission printed more than the "
                    f"{MAX_SUBMISSION_OUTPUT_CHARS:,} characters kept per notebook)\n",
                }
            ] + [o for o in outputs if o.get("output_type") == "error"][:1]
            size = _output_chars(outputs)
        self.output_left -= size
        self.count += 1
        cell.outputs = [self.nbformat.from_dict(o) for o in outputs]
        cell.execution_count = self.count

    def run_student_until(self, grade_id: str | None, inclusive: bool) -> None:
        """Run student cells in order up to the cell with ``grade_id``."""
        while self.pos < len(self.cells):
            c = self.cells[self.pos]
            gid = _nbgrader_meta(c).get("grade_id")
            if grade_id is not None and gid == grade_id and not inclusive:
                return
            self.pos += 1
            if not _is_test(c):
                record_student_cell(c.source)
                left = self._time_left()
                if left <= 0:
                    if not self.out_of_time:
                        self.result.notes.append(
                            "the submission's time budget ran out; later cells were not run"
                        )
                    self.out_of_time = True
                    outs = [
                        {
                            "output_type": "error",
                            "ename": "TimeoutError",
                            "traceback": [],
                            "evalue": "not run: the submission's time budget ran out",
                        }
                    ]
                else:
                    outs = self.sandbox.run_cell(c.source, timeout=min(self.call_timeout, left))
                self._set_outputs(c, outs)
            if grade_id is not None and gid == grade_id:
                return

    def bind_solution_names(self, cell) -> None:
        from .remote import Remote, StudentCodeError

        callables, values = _defined_names(cell.source)
        for name in callables:
            self.trusted.ns[name] = Remote(self.sandbox.session, name=name)
        for name in values:
            try:
                self.trusted.ns[name] = _fetch_value(self.sandbox.session, name)
            except StudentCodeError:
                self.trusted.ns.pop(name, None)

    def judge_test(self, cell, gid: str) -> None:
        from .remote import Unsendable

        t = self.result.tests[gid]
        if self._time_left() <= 0:
            res = {
                "stdout": "",
                "ename": "TimeoutError",
                "exc": None,
                "evalue": "not run: the submission's time budget ran out",
            }
        else:
            self.sandbox.session.call_timeout_s = max(1.0, min(self.call_timeout, self._time_left()))
            res = self.trusted.run(cell.source, gid)
        if isinstance(res["exc"], Unsendable):
            self.result.notes.append(
                f"{gid}: the test passes an object to student code, which "
                "the grader does not do: fix the test to pass plain data"
            )
        t["passed"] = res["ename"] is None
        t["points"] = t["max"] if t["passed"] else 0.0
        t["reason"] = (
            "passed" if t["passed"] else printable(f"{res['ename']}: {res['evalue']}", MAX_REASON_CHARS)
        )
        student_cell = self.by_id.get(gid)
        if student_cell is not None and _is_test(student_cell):
            self._set_outputs(student_cell, _outputs_for_test(res))
        self.sandbox.after_remote_failure()

    def run_provided(self, cell, gid: str | None) -> None:
        from .remote import Unsendable

        res = self.trusted.run(cell.source, gid or "setup")
        if res["ename"] and not isinstance(res["exc"], Unsendable):
            # later tests that need this cell will fail: say why
            self.result.notes.append(
                f"a provided cell failed in the verifier: {res['ename']}: {str(res['evalue'])[:200]}"
            )

    def walk(self) -> None:
        reset_student_cells()
        for cell in self.source_nb.cells:
            if cell.cell_type != "code":
                continue
            gid = _nbgrader_meta(cell).get("grade_id")
            if _is_solution(cell):
                self.run_student_until(gid, inclusive=True)
                self.bind_solution_names(cell)
            elif _is_test(cell):
                self.run_student_until(gid, inclusive=False)
                self.judge_test(cell, gid)
            else:
                self.run_provided(cell, gid)
        self.run_student_until(None, inclusive=True)  # cells after the last test run too, as in nbgrader


def _zero_result(student: str, source_nb) -> GradeResult:
    result = GradeResult(student)
    for c in source_nb.cells:
        if _is_test(c):
            m = _nbgrader_meta(c)
            result.tests[m["grade_id"]] = {
                "points": 0.0,
                "max": float(m.get("points", 0)),
                "passed": False,
                "reason": "not graded",
            }
    return result


def _all_zero(result: GradeResult, reason: str) -> GradeResult:
    for t in result.tests.values():
        t["reason"] = reason
    result.notes.append(reason)
    return result


def grade_submission(
    lab: str,
    student: str,
    submission: str | None,
    course_root: str,
    limits: dict | None = None,
    submissions_root: str | None = None,
) -> dict:
    """Grade one submission (copy in, sanitise, run in the sandbox, verify in this process).

    ``submission`` is the notebook's path relative to ``submissions_root`` (read without
    following links), or ``None`` when nothing was submitted. Returns a
    :class:`~.results.GradeResult` as a dict. Never raises for a broken submission: every
    problem becomes a reason attached to 0 points; a failure of the grader itself sets
    ``not_graded``.
    """
    import nbformat

    from .course import course_config
    from .files import UnsafeFile, read_path

    t0 = time.time()
    check_student_id(student)
    course = Path(course_root)
    source_nb = nbformat.read(str(course / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    result = _zero_result(student, source_nb)

    def done(r: GradeResult) -> dict:
        r.seconds = time.time() - t0
        return asdict(r)

    if submission is None:
        return done(_all_zero(result, "no notebook submitted"))
    cfg = course_config(course)
    try:
        raw = read_path(submissions_root, submission, MAX_NOTEBOOK_BYTES)
        student_nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        student_nb = _sanitize(student_nb, lab, student, cfg.CourseDirectory.db_url, cfg)
    except UnsafeFile as e:
        return done(_all_zero(result, f"the submitted notebook was refused: {printable(e, 300)}"))
    except Exception as e:  # noqa: BLE001 - unreadable or malformed: 0 with the reason
        return done(
            _all_zero(result, f"the notebook could not be read: {type(e).__name__}: {printable(e, 200)}")
        )

    limits_obj = SandboxLimits(**(limits or {}))
    public = course / "labs" / lab
    sandbox = _Sandbox(course, limits_obj, keep=[str(public)] if public.exists() else [])
    try:
        sandbox.start_with_retries()
    except InfrastructureError as e:
        sandbox.stop()
        result.not_graded = str(e)
        result.notes += sandbox.notes
        return done(result)
    try:
        _Run(source_nb, student_nb, result, sandbox, limits_obj).walk()
    finally:
        sandbox.stop()
    result.notes += sandbox.notes
    result.notes = [printable(n, 500) for n in result.notes]
    result.notebook = json.loads(nbformat.writes(student_nb))
    return done(result)


# ---------------------------------------------------------------------------------------------
# the class
def _grade_all(lab: str, jobs: dict[str, tuple], workers: int, bar) -> dict[str, GradeResult]:
    import multiprocessing as mp

    results: dict[str, GradeResult] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(grade_submission, *args): s for s, args in jobs.items()}
        for fut in as_completed(futures):
            s = futures[fut]
            try:
                results[s] = GradeResult(**fut.result())
            except Exception as e:  # noqa: BLE001 - a crashed worker is the grader's failure
                try:  # the verifier runs no student code, so retrying it here is safe
                    r = GradeResult(**grade_submission(*jobs[s]))
                    r.notes.append(f"graded in the main process after a worker failed ({type(e).__name__})")
                except Exception as e2:  # noqa: BLE001
                    r = GradeResult(
                        s,
                        not_graded=f"grading failed twice: {type(e).__name__}: "
                        f"{printable(e, 200)}; then {type(e2).__name__}: "
                        f"{printable(e2, 200)}",
                    )
                results[s] = r
            bar.update(1)
    return results


def grade_lab(
    lab: str,
    submissions_dir: str | os.PathLike | None = None,
    workers: int = 2,
    student: str | None = None,
    course_root: str | os.PathLike = REPO_ROOT,
    limits: dict | None = None,
    csv_path: str | os.PathLike | None = None,
    progress: bool = True,
    print_fn=print,
) -> list[GradeResult]:
    """Grade every submission of ``lab`` (see the module docstring); returns the results,
    sorted by student, including the submissions that were refused or not graded
    (``not_graded`` set: nothing was recorded for them).

    Parameters
    ----------
    lab : str
    submissions_dir : path, default ``<course>/submitted``
    workers : int >= 1, submissions graded in parallel
    student : str or None, grade only this student (the export still lists the whole class)
    course_root : path of the nbgrader course (``solutions/``, ``labs/``, ``gradebook.db``)
    limits : dict of :class:`~.limits.SandboxLimits` fields
    csv_path : where to export grades, default ``<course>/grades/<lab>.csv``
    """
    from tqdm.auto import tqdm

    from .course import ensure_assignment, lab_source
    from .export import export_grades, print_summary
    from .record import backup_gradebook, record
    from .sandbox import isolation_level

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    course = Path(course_root).resolve()
    lab_source(lab, course)
    SandboxLimits(**(limits or {}))  # validate early, with a clear message
    subs_dir = (Path(submissions_dir) if submissions_dir else course / "submitted").resolve()
    submissions, refused = find_submissions(lab, subs_dir, student)
    if not submissions and not refused:
        raise ValueError(f"no submissions for {lab} in {subs_dir}")
    level = isolation_level()
    if level == "limits-only":
        print_fn(
            "WARNING: OS-level isolation is unavailable (neither root with `unshare` nor "
            "bubblewrap with user namespaces works here). Student code still runs in a "
            "separate kernel with memory/CPU/time limits, a scrubbed environment and verdicts "
            "computed outside it, but it can read any file your user can read (gradebook, "
            "solutions/). Install bubblewrap (`apt-get install bubblewrap`) or grade as root."
        )
    backup = backup_gradebook(course)
    if backup is not None:
        print_fn(f"gradebook backed up to {backup.name}")
    ensure_assignment(lab, course)

    jobs = {s: (lab, s, rel, str(course), limits, str(subs_dir)) for s, rel in submissions.items()}
    bar = tqdm(total=len(jobs), desc=f"grading {lab}", unit="submission", disable=not progress)
    results = _grade_all(lab, jobs, workers, bar) if jobs else {}
    bar.close()
    for name, why in refused.items():
        results[name] = GradeResult(name, not_graded=why)
    ordered = [results[s] for s in sorted(results)]
    graded = [r for r in ordered if r.graded]
    errors = record(lab, graded, course, subs_dir, submissions) if graded else {}
    for s, err in errors.items():
        results[s].notes.append(f"nbgrader could not record this grade: {printable(err, 300)}")
    path = Path(csv_path) if csv_path else course / "grades" / f"{lab}.csv"
    export_grades(lab, ordered, course, path)
    print_summary(ordered, print_fn)
    print_fn(f"grades exported to {path}")
    return ordered
