"""Notebook hygiene for Open LLM Lab, from the shell.

python tools/nbtools.py normalize PATH...   strip outputs, stable ids, kernelspec python3
python tools/nbtools.py check PATH...       exit 1 and list problems if a notebook is not clean
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nbformat

from course_lib.notebooks import problems, write


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("normalize", "check"):
        print(__doc__)
        return 2
    cmd, paths = argv[0], [Path(p) for p in argv[1:]]
    bad = []
    for p in paths:
        if cmd == "normalize":
            write(nbformat.read(str(p), as_version=4), p)
        else:
            bad += problems(p)
    for line in bad:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
