"""Every limit of the grader, in one place: per-submission sandbox limits and the caps on what
the trusted side reads from student-writable places or student code.

    >>> SandboxLimits().memory_gb
    4.0
    >>> SandboxLimits(memory_gb=0.1)
    Traceback (most recent call last):
    ...
    ValueError: memory_gb must be > 0.5 (torch alone needs ~0.5 GB), got 0.1
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = [
    "SandboxLimits",
    "MAX_ANSWER_BYTES",
    "MAX_ANSWER_ITEMS",
    "MAX_NOTEBOOK_BYTES",
    "MAX_CELL_OUTPUT_CHARS",
    "MAX_SUBMISSION_OUTPUT_CHARS",
    "MAX_REASON_CHARS",
    "MAX_LOG_BYTES",
    "INFRA_RETRIES",
]

# What one remote call's answer may be: bytes on disk, tensor data once decoded (the logical
# size, so a zero-stride tensor counts at its full size), and values in all.
MAX_ANSWER_BYTES = 256 * 2**20
MAX_ANSWER_ITEMS = 2_000_000
# A submitted notebook larger than this is refused (graded 0 with the reason), never parsed.
MAX_NOTEBOOK_BYTES = 64 * 2**20
# Output kept in the graded notebook (and so in feedback): characters of every output type
# together (text, error messages and tracebacks, display data), per cell and per submission.
MAX_CELL_OUTPUT_CHARS = 20_000
MAX_SUBMISSION_OUTPUT_CHARS = 400_000
# A test's failure reason as stored and exported.
MAX_REASON_CHARS = 500
# How much of a kernel or zygote log the grader reads back.
MAX_LOG_BYTES = 64 * 2**10
# How often a submission whose sandbox could not start is retried before it is reported
# "not graded" (never recorded as a grade).
INFRA_RETRIES = 2


@dataclass
class SandboxLimits:
    """Per-submission limits.

    ``memory_gb``: memory of the submission's whole process tree (a cgroup where available,
    else address space per process); ``cpu_seconds``: CPU time for the kernel's life;
    ``call_timeout_s``: wall seconds for any one cell or call; ``submission_timeout_s``: wall
    seconds for the whole submission (cells and calls together); ``max_processes``: processes
    and threads of the submission; ``tmp_mb``: size of its private writable space.
    """

    memory_gb: float = 4.0
    cpu_seconds: int = 900
    call_timeout_s: float = 120.0
    submission_timeout_s: float = 1200.0
    max_processes: int = 256
    tmp_mb: int = 512

    def __post_init__(self):
        if not self.memory_gb > 0.5:
            raise ValueError(f"memory_gb must be > 0.5 (torch alone needs ~0.5 GB), got {self.memory_gb}")
        if not self.cpu_seconds >= 10:
            raise ValueError(f"cpu_seconds must be >= 10, got {self.cpu_seconds}")
        if not self.call_timeout_s > 0:
            raise ValueError(f"call_timeout_s must be > 0, got {self.call_timeout_s}")
        if not self.submission_timeout_s >= self.call_timeout_s:
            raise ValueError(
                f"submission_timeout_s must be >= call_timeout_s "
                f"({self.call_timeout_s}), got {self.submission_timeout_s}"
            )
        if not (isinstance(self.max_processes, int) and self.max_processes >= 16):
            raise ValueError(f"max_processes must be an int >= 16, got {self.max_processes!r}")
        if not (isinstance(self.tmp_mb, int) and self.tmp_mb >= 16):
            raise ValueError(f"tmp_mb must be an int >= 16, got {self.tmp_mb!r}")

    @classmethod
    def field_defaults(cls) -> dict:
        """``{field: default}``: what the command line shows and uses when not given."""
        return {f.name: f.default for f in fields(cls)}
