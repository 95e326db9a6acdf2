"""Grading Open LLM Lab's labs: everything that touches submissions, in one package.

Start here:

* :mod:`.course` - nbgrader plumbing: the course configuration, ``release`` (student version
  from ``solutions/``), plain ``autograde`` (trusted dry runs and tests; no sandbox).
* :mod:`.grade` - ``python -m course_lib grade``: sandboxed, parallel autograding of a class.

and the pieces it is made of, one rule each:

* :mod:`.results` the one result type; :mod:`.ids` the student-id rule and safe display of
  student text; :mod:`.limits` every limit; :mod:`.files` how student-writable files are opened;
* :mod:`.sandbox` the kernel's isolation (namespaces, mounts, rlimits), :mod:`.zygote` kernels
  by fork from a warm parent;
* :mod:`.wire` the data format across the boundary, :mod:`.kernel_runtime` its kernel side,
  :mod:`.remote` its trusted side;
* :mod:`.record` gradebook writes and feedback, :mod:`.feedback` what feedback may show
  (sanitised HTML, test cells without hidden inputs), :mod:`.export` the CSV and the summary;
* :mod:`.mistakes` the seeded mistakes that tests and benchmarks grade.

Importing this package is cheap (no torch, no nbgrader until a function needs them).

    >>> from course_lib import grading
    >>> "lab00_pytorch_warmup" in grading.list_labs()
    True
"""

from .course import (
    REPO_ROOT,
    autograde,
    course_config,
    ensure_assignment,
    generate_student_version,
    lab_source,
    list_labs,
    release,
)
from .grade import find_submissions, grade_lab
from .limits import SandboxLimits
from .results import GradeResult

__all__ = [
    "REPO_ROOT",
    "GradeResult",
    "SandboxLimits",
    "autograde",
    "course_config",
    "ensure_assignment",
    "find_submissions",
    "generate_student_version",
    "grade_lab",
    "lab_source",
    "list_labs",
    "release",
]
