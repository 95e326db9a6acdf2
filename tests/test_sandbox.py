"""The grading sandbox: kernels started cold (unshare + exec) and forked from a warm zygote must
be equally isolated, limited and killable; kernels from one zygote must not see each other."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from course_lib.grading.sandbox import KernelDied, SandboxKernel, SandboxLimits, isolation_level
from course_lib.grading.zygote import Zygote

ISOLATED = isolation_level() == "namespaces"
REPO = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, os, socket
probe = {"uid": os.getuid(), "pid": os.getpid(), "cwd": os.getcwd(),
         "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
         "sees_repo": os.path.exists(%r), "sees_other": os.path.exists(%r),
         "env_keys": sorted(os.environ),
         "dumpable": __import__("ctypes").CDLL(None).prctl(4, 1, 0, 0, 0),  # PR_SET_DUMPABLE
         "initial_env": open("/proc/self/environ", "rb").read().decode(errors="replace"),
         "fds": sorted(int(f) for f in os.listdir("/proc/self/fd"))}
try:
    open("/run/lock/olm-probe", "w").write("x"); probe["shared_write"] = True
except OSError:
    probe["shared_write"] = False
try:
    socket.create_connection(("1.1.1.1", 80), timeout=2); probe["network"] = True
except OSError:
    probe["network"] = False
print(json.dumps(probe))
"""


@pytest.fixture(scope="module", autouse=True)
def grader_secret():
    """A credential in the grader's environment, set before any kernel or zygote starts."""
    os.environ["OLM_SECRET_TOKEN"] = "do-not-leak"
    yield
    os.environ.pop("OLM_SECRET_TOKEN", None)


def _probe(kernel: SandboxKernel, other: str) -> dict:
    r = kernel.execute(PROBE % (str(REPO / "solutions"), other))
    assert r["status"] == "ok", r
    return json.loads("".join(o["text"] for o in r["outputs"] if o.get("name") == "stdout"))


@pytest.fixture(scope="module")
def zygote(tmp_path_factory, grader_secret):
    z = Zygote(tmp_path_factory.mktemp("course")).start()
    yield z
    z.close()


def test_zygote_kernels_are_isolated_from_the_grader_and_each_other(zygote):
    limits = SandboxLimits(call_timeout_s=30)
    with SandboxKernel(zygote.course_root, limits, zygote=zygote) as first:
        r = first.execute("open('mine.txt', 'w').write('secret'); import os; print(os.getcwd())")
        assert r["status"] == "ok", r
        first_dir = str(first.workdir)
        assert (first.workdir / "mine.txt").read_text() == "secret"  # the grader sees its files
        p1 = _probe(first, str(REPO))
    with SandboxKernel(zygote.course_root, limits, zygote=zygote) as second:
        p2 = _probe(second, first_dir)
        assert p2["cwd"] == str(second.workdir)
    for p in (p1, p2):  # the grader's environment (credentials...) never reaches student code
        assert "HOME" in p["env_keys"] and "OLM_SECRET_TOKEN" not in p["env_keys"], p["env_keys"]
        assert "OLM_SECRET_TOKEN" not in p["initial_env"]
    if ISOLATED:
        for p in (p1, p2):
            assert p["uid"] == 65534, p
            assert p["pid"] == 1, p                    # PID 1 of its own namespace
            assert len(p["procs"]) <= 3, p["procs"]    # sees its own processes only
            assert not p["sees_repo"] and not p["network"] and not p["shared_write"], p
        assert not p2["sees_other"], "a kernel saw the previous kernel's work folder"


def test_zygote_kernel_timeout_interrupt_and_death(zygote):
    with SandboxKernel(zygote.course_root, SandboxLimits(call_timeout_s=3), zygote=zygote) as k:
        r = k.execute("while True:\n    pass")
        assert r["status"] == "error" and r["ename"] == "TimeoutError", r
        assert k.execute("x = 6 * 7")["status"] == "ok"  # interrupted, not killed
        with pytest.raises(KernelDied):
            k.execute("import os; os._exit(3)")
        assert not k.alive()
    # the zygote survives a dead kernel and forks the next one
    with SandboxKernel(zygote.course_root, SandboxLimits(call_timeout_s=30), zygote=zygote) as k:
        assert k.execute("import torch; print(torch.ones(2).sum().item())")["outputs"][0]["text"].strip() == "2.0"


def test_zygote_kernel_memory_limit(zygote):
    with SandboxKernel(zygote.course_root, SandboxLimits(memory_gb=1.5, call_timeout_s=30), zygote=zygote) as k:
        r = k.execute("x = bytearray(3 * 2**30)")
        assert r["status"] == "error" and r["ename"] == "MemoryError", r


def test_cold_kernel_matches(tmp_path):
    with SandboxKernel(tmp_path, SandboxLimits(call_timeout_s=30)) as k:
        p = _probe(k, str(tmp_path))
    assert "OLM_SECRET_TOKEN" not in p["env_keys"] and "OLM_SECRET_TOKEN" not in p["initial_env"]
    if ISOLATED:
        assert p["uid"] == 65534 and not p["sees_repo"] and not p["network"] and not p["shared_write"], p


def test_zygote_close_stops_its_kernel(tmp_path):
    z = Zygote(tmp_path).start()
    k = SandboxKernel(tmp_path, zygote=z).start()
    z.close()
    assert not z.alive() and not z.spool.exists()
    assert not k.alive()
    with pytest.raises(KernelDied):
        SandboxKernel(tmp_path, zygote=z).start()


def test_remote_calls_keep_types_and_honour_test_time_limits(zygote):
    """What tests written for nbgrader rely on still holds across the sandbox boundary:
    ``except ValueError`` catches the student's ValueError, DataFrames come back as DataFrames,
    numpy scalars can be sent, and a test's own SIGALRM time limit stops a slow student call."""
    import signal
    import time

    import numpy as np
    import pandas as pd

    from course_lib.grading.remote import Remote, RemoteSession, StudentCodeError

    with SandboxKernel(zygote.course_root, SandboxLimits(call_timeout_s=60), zygote=zygote) as k:
        session = RemoteSession(k, 60)
        session.install()
        r = k.execute(
            "import pandas as pd, time\n"
            "def picky(x):\n"
            "    if x < 0: raise ValueError('x must be >= 0')\n"
            "    return x * 2\n"
            "def table(n):\n"
            "    return pd.DataFrame({'word': ['a', 'b'][:n], 'score': [0.5, 1.5][:n]}, index=[10, 20][:n])\n"
            "def slow():\n"
            "    time.sleep(30)\n"
            "    return 1\n")
        assert r["status"] == "ok", r
        picky, table, slow = (Remote(session, name=n) for n in ("picky", "table", "slow"))
        with pytest.raises(ValueError, match="x must be >= 0") as info:
            picky(-1)
        assert isinstance(info.value, StudentCodeError)  # and marked as coming from student code
        assert picky(np.float64(2.5)) == 5.0
        frame = table(2)
        assert isinstance(frame, pd.DataFrame)
        pd.testing.assert_frame_equal(frame, pd.DataFrame({"word": ["a", "b"], "score": [0.5, 1.5]},
                                                          index=[10, 20]))

        def out_of_time(*_):
            raise TimeoutError

        previous = signal.signal(signal.SIGALRM, out_of_time)
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        t0 = time.time()
        try:
            with pytest.raises(TimeoutError):
                slow()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert time.time() - t0 < 10
        assert picky(3) == 6  # the interrupted call did not leave the kernel busy


def test_zygote_without_namespaces(tmp_path):
    """Where OS isolation is unavailable (not root, macOS) the zygote still forks limited
    kernels that can be interrupted and killed."""
    z = Zygote(tmp_path, isolate=False).start()
    try:
        with SandboxKernel(tmp_path, SandboxLimits(call_timeout_s=3), zygote=z) as k:
            assert not k.isolate
            r = k.execute("import os; print(os.getcwd())")
            assert r["outputs"][0]["text"].strip() == str(k.workdir)
            assert k.execute("while True:\n    pass")["ename"] == "TimeoutError"
            with pytest.raises(KernelDied):
                k.execute("import os; os._exit(0)")
    finally:
        z.close()


def test_grader_falls_back_to_a_cold_kernel(tmp_path, monkeypatch):
    """If the zygote cannot fork a kernel, the submission is still graded (in a cold kernel)."""
    from course_lib.grading import grade, zygote

    real = zygote.Zygote.request

    def spawn_fails(self, req, timeout=60.0):
        if req.get("op") == "spawn":
            raise KernelDied("simulated fork failure")
        return real(self, req, timeout)

    monkeypatch.setattr(zygote.Zygote, "request", spawn_fails)
    sb = grade._Sandbox(tmp_path, SandboxLimits(call_timeout_s=30), keep=[])
    sb.start()
    try:
        assert sb.kernel.zygote is None
        assert any("started a cold kernel" in n for n in sb.notes), sb.notes
        assert sb.kernel.execute("x = 1")["status"] == "ok"
    finally:
        sb.stop()
