"""Compute an expensive test fixture once per test run, even with several xdist workers.

pytest-xdist gives each worker its own module- and session-scoped fixtures, so a fixture used by
tests that ``--dist worksteal`` spreads over two workers is built twice. :func:`once` builds it
in the first worker that asks, under a file lock in the run's shared temporary folder, and the
other workers load the pickled result (the pattern pytest-xdist's documentation gives).
"""

from __future__ import annotations

import pickle
from typing import Callable

from filelock import FileLock


def once(tmp_path_factory, name: str, build: Callable[[], object]):
    """``build()``'s result, computed once per test run (it must be picklable)."""
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if root.name.startswith("popen-gw") else root  # xdist: one folder per worker
    path = shared / f"once-{name}.pickle"
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return pickle.loads(path.read_bytes())
        value = build()
        path.write_bytes(pickle.dumps(value))
        return value
