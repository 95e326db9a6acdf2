"""The one result type of both graders (plain nbgrader autograde and ``course_lib grade``).

>>> r = GradeResult("alice", {"t1": {"points": 3.0, "max": 4.0, "passed": False, "reason": "x"}})
>>> r.score, r.max_score, r.fraction, r.graded
(3.0, 4.0, 0.75, True)
>>> GradeResult("bob", not_graded="the sandbox could not start").graded
False
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GradeResult"]


@dataclass
class GradeResult:
    """One submission's grade, as plain data (safe to pass between processes).

    ``tests[grade_id] = {"points", "max", "passed", "reason"}``; ``notes`` say what happened
    (a kernel restart, a refused file); ``not_graded`` is set (to the reason) when grading
    itself failed (an infrastructure failure, a refused submission): then no grade exists and
    none may be recorded; ``notebook`` is the executed, sanitised notebook (nbformat dict).
    """

    student: str
    tests: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    not_graded: str | None = None
    notebook: dict | None = None

    @property
    def graded(self) -> bool:
        return self.not_graded is None

    @property
    def score(self) -> float:
        return float(sum(t["points"] for t in self.tests.values()))

    @property
    def max_score(self) -> float:
        return float(sum(t["max"] for t in self.tests.values()))

    @property
    def fraction(self) -> float:
        return self.score / self.max_score if self.max_score else 0.0

    def failed(self) -> dict[str, str]:
        """``{grade_id: reason}`` of the tests that did not pass."""
        return {g: t["reason"] for g, t in self.tests.items() if not t["passed"]}
