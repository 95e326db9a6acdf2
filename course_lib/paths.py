"""Where things are: the repository root and the course cache, defined once.

Every module that needs the repository (``solutions/``, ``labs/``, ``pyproject.toml``) or the
cache imports these names instead of spelling out ``Path(__file__).parent.parent``: a module
that moves to a sub-package would otherwise silently point at the wrong folder (and, in the
grader, unhide the course inside the sandbox).

    >>> (REPO_ROOT / "course_lib" / "paths.py").is_file()
    True
    >>> cache_root().name != ""
    True
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "COURSE_LIB_DIR", "cache_root"]

COURSE_LIB_DIR = Path(__file__).resolve().parent
REPO_ROOT = COURSE_LIB_DIR.parent


def cache_root() -> Path:
    """The course cache folder: ``$OPEN_LLM_LAB_CACHE`` or ``~/.cache/open-llm-lab`` (not created).

    Only things the course derives itself live there (e.g. SmolLM2 weights dequantized once).
    """
    env = os.environ.get("OPEN_LLM_LAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "open-llm-lab"
