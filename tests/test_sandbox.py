"""The grading sandbox: kernels started cold (unshare or bwrap + exec) and forked from a warm
zygote must be equally isolated, limited and killable; kernels from one zygote must not see each
other; a grader without root gets the same isolation from bubblewrap; one submission's processes,
memory and files never eat into another's limits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from course_lib.grading.sandbox import (
    SANDBOX_UID_BASE,
    KernelDied,
    SandboxKernel,
    SandboxLimits,
    isolation_level,
    isolation_problems,
)
from course_lib.grading.zygote import Zygote

LEVEL = isolation_level()
ISOLATED = LEVEL != "limits-only"
REPO = Path(__file__).resolve().parent.parent
UNPRIVILEGED_UID = 65534  # the user the bubblewrap tests run the grader as

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


def _needs_zygote() -> None:
    if LEVEL == "bubblewrap":
        pytest.skip(
            "no warm zygote under bubblewrap (it needs root namespaces): kernels start "
            "cold; tests/test_sandbox.py's bubblewrap tests cover them"
        )


@pytest.fixture(scope="module")
def zygote(tmp_path_factory, grader_secret):
    _needs_zygote()
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
    if not ISOLATED:
        pytest.skip(
            f"the isolation checks need namespaces or bubblewrap ({LEVEL} here); "
            "the environment checks above passed"
        )
    for p, k in ((p1, first), (p2, second)):
        _assert_own_uid(p, k)
        assert p["pid"] == 1, p  # PID 1 of its own namespace
        assert len(p["procs"]) <= 3, p["procs"]  # sees its own processes only
        assert not p["sees_repo"] and not p["network"] and not p["shared_write"], p
    assert not p2["sees_other"], "a kernel saw the previous kernel's work folder"


def test_zygote_kernel_timeout_interrupt_and_death(zygote):
    with SandboxKernel(zygote.course_root, SandboxLimits(call_timeout_s=3), zygote=zygote) as k:
        r = k.execute("while True:\n    pass")
        assert r["status"] == "error" and r["ename"] == "TimeoutError", r
        assert k.execute("x = 6 * 7")["status"] == "ok"  # interrupted, not killed
        with pytest.raises(KernelDied):
            k.execute("import os; os._exit(3)", timeout=60)  # not the 3 s: a busy machine may be slower
        assert not k.alive()
    # the zygote survives a dead kernel and forks the next one
    with SandboxKernel(zygote.course_root, SandboxLimits(call_timeout_s=30), zygote=zygote) as k:
        assert (
            k.execute("import torch; print(torch.ones(2).sum().item())")["outputs"][0]["text"].strip()
            == "2.0"
        )


def test_zygote_kernel_memory_limit(zygote):
    with SandboxKernel(
        zygote.course_root, SandboxLimits(memory_gb=1.5, call_timeout_s=30), zygote=zygote
    ) as k:
        r = k.execute("x = bytearray(3 * 2**30)")
        assert r["status"] == "error" and r["ename"] == "MemoryError", r


def test_cold_kernel_matches(tmp_path):
    with SandboxKernel(tmp_path, SandboxLimits(call_timeout_s=30)) as k:
        p = _probe(k, str(tmp_path))
    assert "OLM_SECRET_TOKEN" not in p["env_keys"] and "OLM_SECRET_TOKEN" not in p["initial_env"]
    if not ISOLATED:
        pytest.skip(
            f"the isolation checks need namespaces or bubblewrap ({LEVEL} here); "
            "the environment checks above passed"
        )
    _assert_own_uid(p, k)
    assert not p["sees_repo"] and not p["network"] and not p["shared_write"], p


def _assert_own_uid(p: dict, k: SandboxKernel) -> None:
    """As root the kernel runs as a uid of its own (nobody where no slot was free); under
    bubblewrap as the grader's uid, in a user namespace of its own."""
    if os.geteuid() != 0:
        assert p["uid"] == os.getuid(), p
    elif "uid-per-kernel" in k.limits_applied:
        assert p["uid"] == k.uid and SANDBOX_UID_BASE <= p["uid"], (p, k.limits_applied)
    else:
        assert p["uid"] == 65534, (p, k.limits_unavailable)


def test_zygote_close_stops_its_kernel(tmp_path):
    _needs_zygote()
    z = Zygote(tmp_path).start()
    k = SandboxKernel(tmp_path, zygote=z).start()
    z.close()
    assert not z.alive() and not z.spool.exists()
    assert not k.alive()
    with pytest.raises(KernelDied):
        SandboxKernel(tmp_path, zygote=z).start()
    k.stop()  # releases its cgroup and uid even so
    assert not k.cleanup_problems, k.cleanup_problems


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
            "    return 1\n"
        )
        assert r["status"] == "ok", r
        picky, table, slow = (Remote(session, name=n) for n in ("picky", "table", "slow"))
        with pytest.raises(ValueError, match="x must be >= 0") as info:
            picky(-1)
        assert isinstance(info.value, StudentCodeError)  # and marked as coming from student code
        assert picky(np.float64(2.5)) == 5.0
        frame = table(2)
        assert isinstance(frame, pd.DataFrame)
        pd.testing.assert_frame_equal(
            frame, pd.DataFrame({"word": ["a", "b"], "score": [0.5, 1.5]}, index=[10, 20])
        )

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
                k.execute("import os; os._exit(0)", timeout=60)  # a slow start would read as a timeout
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


# ---------------------------------------------------------------------------------------------
# the isolation level, and the zygote under bubblewrap
def test_isolation_level_is_known_and_explained():
    assert LEVEL in ("namespaces", "bubblewrap", "limits-only")
    assert isolation_level() == LEVEL  # cached: the same answer without probing again
    problems = isolation_problems()
    if LEVEL != "namespaces":
        assert problems.get("namespaces"), problems  # why not, in words
    if LEVEL == "limits-only":
        assert problems.get("bubblewrap"), problems


def test_zygote_refuses_bubblewrap(tmp_path, monkeypatch):
    """Under bubblewrap there is no warm zygote (the grader starts kernels cold instead)."""
    from course_lib.grading import zygote

    monkeypatch.setattr(zygote, "isolation_level", lambda: "bubblewrap")
    with pytest.raises(KernelDied, match="bubblewrap"):
        Zygote(tmp_path)


# ---------------------------------------------------------------------------------------------
# per-submission limits: code the tests run in kernels, as root here and as an unprivileged
# grader under bubblewrap below
THREADS = r"""
import json, threading
threading.stack_size(256 * 1024)
hold = threading.Event()
started, error = 0, None
for _ in range(300):
    try:
        threading.Thread(target=hold.wait, daemon=True).start()
        started += 1
    except RuntimeError as e:
        error = str(e)
        break
print(json.dumps({"started": started, "error": error}))
"""
SECOND_KERNEL_THREADS = r"""
import json, threading
ts = [threading.Thread(target=lambda: None) for _ in range(20)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps({"ok": True}))
"""
# three processes of 500 MB each: under memory_gb=1.0 together they must not all survive
MEMORY = r"""
import json, subprocess, sys
hog = "import time; b = b'x' * (500 << 20); time.sleep(4)"
procs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(3)]
print(json.dumps([p.wait() for p in procs]))
"""
FILL = r"""
import errno, json, os, tempfile
def fill(folder, limit_mb):
    written, error, names = 0, None, []
    try:
        for i in range(limit_mb // 4 + 8):
            names.append(os.path.join(folder, f"fill-{i}"))
            with open(names[-1], "wb") as f:
                f.write(b"x" * (4 << 20))
            written += 4
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
    for n in names:
        if os.path.exists(n):
            os.remove(n)
    return {"written_mb": written, "error": error}
print(json.dumps({"workdir": fill(os.getcwd(), %(mb)d), "tmpdir": fill(tempfile.gettempdir(), %(mb)d)}))
"""


def _stdout_json(r: dict):
    assert r["status"] == "ok", r
    return json.loads("".join(o["text"] for o in r["outputs"] if o.get("name") == "stdout"))


def _require(k: SandboxKernel, *any_of: str) -> None:
    """Skip, saying why, unless the kernel got one of the limits ``any_of``."""
    if not any(m in k.limits_applied for m in any_of):
        pytest.skip(
            f"this machine cannot give each kernel {' or '.join(any_of)}: "
            f"{ {m: k.limits_unavailable.get(m) for m in any_of} }"
        )


def _needs_root_isolation() -> None:
    if LEVEL != "namespaces":
        pytest.skip(
            f"these run as root with namespaces (here: {LEVEL}); the bubblewrap "
            "versions below run the grader as an unprivileged user"
        )


def test_one_submissions_threads_do_not_starve_another(tmp_path):
    """A kernel that starts threads until its limit stops it leaves a second concurrent
    sandbox free to start and to start threads of its own (its process count is its own)."""
    _needs_root_isolation()
    limits = SandboxLimits(call_timeout_s=60)
    with SandboxKernel(tmp_path, limits) as greedy:
        _require(greedy, "uid-per-kernel", "nproc-per-userns")
        hog = _stdout_json(greedy.execute(THREADS))
        assert hog["started"] < 300 and hog["error"], hog  # its own limit stopped it
        with SandboxKernel(tmp_path, limits) as second:
            assert _stdout_json(second.execute(SECOND_KERNEL_THREADS)) == {"ok": True}
        assert greedy.alive()


def test_children_share_one_memory_limit(tmp_path):
    """Processes a kernel starts share its memory_gb: three of 500 MB under 1 GB do not all
    survive (each alone is under the per-process limit)."""
    _needs_root_isolation()
    with SandboxKernel(tmp_path, SandboxLimits(memory_gb=1.0, call_timeout_s=60)) as k:
        _require(k, "cgroup-memory")
        try:
            codes = _stdout_json(k.execute(MEMORY))
        except KernelDied:
            return  # the cgroup's OOM killer took the kernel itself: limited too
    assert any(c == -9 for c in codes), f"3 x 500 MB all ran under a 1 GB limit: {codes}"


def test_private_space_is_capped(tmp_path):
    """Writing more than tmp_mb into the work folder or TMPDIR ends in ENOSPC."""
    _needs_root_isolation()
    with SandboxKernel(tmp_path, SandboxLimits(tmp_mb=16, call_timeout_s=60)) as k:
        _require(k, "tmpfs-workdir")
        out = _stdout_json(k.execute(FILL % {"mb": 16}))
    for where in ("workdir", "tmpdir"):
        assert out[where]["error"] == "ENOSPC" and out[where]["written_mb"] <= 16, out


def test_zygote_kernel_space_is_capped(zygote):
    with SandboxKernel(zygote.course_root, SandboxLimits(tmp_mb=16, call_timeout_s=60), zygote=zygote) as k:
        _require(k, "tmpfs-workdir")
        assert {"cgroup-memory", "cgroup-pids"} <= set(k.limits_applied) or k.limits_unavailable
        out = _stdout_json(k.execute(FILL % {"mb": 16}))
    for where in ("workdir", "tmpdir"):
        assert out[where]["error"] == "ENOSPC" and out[where]["written_mb"] <= 16, out


def _running(pid: int) -> bool:
    """Is ``pid`` a live process (not gone, not a zombie waiting for its new parent to reap it)?"""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_stop_releases_every_limit(tmp_path):
    """After stop: every process of the kernel gone, no cgroup, no mount, no work folder."""
    _needs_root_isolation()
    k = SandboxKernel(tmp_path, SandboxLimits(call_timeout_s=30)).start()
    assert k.execute("import subprocess; p = subprocess.Popen(['sleep', '300'])")["status"] == "ok"
    if k._cgroup is None:
        pytest.skip(f"no cgroup here: {k.limits_unavailable}")
    dirs, pids = list(k._cgroup.dirs), k._cgroup.pids()
    assert len(pids) >= 2, pids  # the kernel and its sleep
    k.stop()
    assert not k.cleanup_problems, k.cleanup_problems
    assert not any(d.exists() for d in dirs), dirs
    assert not [p for p in pids if _running(p)], "a process of the stopped kernel survived"
    assert not k.workdir.exists()
    assert str(k.workdir) not in Path("/proc/self/mountinfo").read_text()


KILLED_GRADER = r"""
import json, os, signal, sys
from pathlib import Path
from course_lib.grading.sandbox import SandboxKernel, SandboxLimits
k = SandboxKernel(Path(sys.argv[1]), SandboxLimits(call_timeout_s=30)).start()
k.execute("import subprocess; p = subprocess.Popen(['sleep', '300'])")
print(json.dumps({"workdir": str(k.workdir), "cgroups": [str(d) for d in k._cgroup.dirs] if k._cgroup else [],
                  "pids": sorted(k._cgroup.pids()) if k._cgroup else []}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no stop(), no atexit: what a crash leaves
"""


def test_what_a_killed_grader_left_is_reaped(tmp_path):
    """A grader killed with SIGKILL leaves its kernel running in its cgroup on its tmpfs; the
    next grader's first kernel kills it and removes the cgroup and the mount."""
    from course_lib.grading import sandbox

    _needs_root_isolation()
    r = subprocess.run(
        [sys.executable, "-c", KILLED_GRADER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    left = json.loads(r.stdout.strip().splitlines()[-1])
    if not left["cgroups"]:
        pytest.skip("no cgroup here: nothing to reap")
    assert all(Path(d).exists() for d in left["cgroups"])
    assert left["workdir"] in Path("/proc/self/mountinfo").read_text()
    sandbox._REAPED.clear()  # a grading process reaps once; this test process has already
    with SandboxKernel(tmp_path, SandboxLimits(call_timeout_s=30)) as k:
        assert k.execute("x = 1")["status"] == "ok"
    assert not any(Path(d).exists() for d in left["cgroups"]), left
    assert left["workdir"] not in Path("/proc/self/mountinfo").read_text()
    assert not Path(left["workdir"]).exists()
    assert not [p for p in left["pids"] if _running(p)], "the dead grader's kernel still runs"


def test_root_without_unshare_uses_bubblewrap(tmp_path, monkeypatch):
    """As root where ``unshare`` fails (a container without CAP_SYS_ADMIN), a kernel runs under
    bwrap as a uid of its own, in its cgroup (entered before it runs), with a capped work folder."""
    from course_lib.grading import sandbox

    if os.geteuid() != 0 or not shutil.which("bwrap"):
        pytest.skip("needs root and bwrap")
    if not sandbox._probe_bwrap(0):
        pytest.skip(
            f"bwrap cannot run a kernel as an unprivileged uid here (is the Python "
            f"environment readable by other users?): {sandbox.isolation_problems().get('bubblewrap')}"
        )
    monkeypatch.setattr(sandbox, "isolation_level", lambda: "bubblewrap")
    with SandboxKernel(tmp_path, SandboxLimits(call_timeout_s=3, tmp_mb=16)) as k:
        assert k.mode == "bubblewrap"
        p = _probe(k, str(tmp_path))
        _assert_own_uid(p, k)
        assert p["pid"] == 1 and not p["sees_repo"] and not p["network"] and not p["shared_write"], p
        if k._cgroup is not None:
            cgroup = k.execute("print(open('/proc/self/cgroup').read())")["outputs"][0]["text"]
            assert k._cgroup.dirs[0].name in cgroup, cgroup
        out = _stdout_json(k.execute(FILL % {"mb": 16}))
        assert out["tmpdir"]["error"] == "ENOSPC", out
        if "tmpfs-workdir" in k.limits_applied:
            assert out["workdir"]["error"] == "ENOSPC", out
        assert k.execute("while True:\n    pass")["ename"] == "TimeoutError"
        assert k.execute("x = 1")["status"] == "ok"  # interrupted, not killed


def test_cgroup_v2_child_or_sibling(tmp_path):
    """cgroup v2 (not mounted on every test machine, so on a fake tree): the kernel's cgroup is
    a child of the grader's own, or a sibling where the grader's cannot have children with
    controllers (it holds processes)."""
    from course_lib.grading.sandbox import _Cgroup

    (tmp_path / "grader").mkdir()
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    (tmp_path / "grader" / "cgroup.controllers").write_text("memory pids\n")
    (tmp_path / "grader" / "cgroup.subtree_control").write_text("\n")
    mounts = [("cgroup2", str(tmp_path), "/", set())]
    missing: dict = {}
    child = _Cgroup._make_v2(mounts, "/grader", "olm-a", ["memory", "pids"], missing)
    assert child == tmp_path / "grader" / "olm-a" and not missing
    assert (tmp_path / "grader" / "cgroup.subtree_control").read_text() == "+memory +pids"
    (tmp_path / "grader" / "cgroup.subtree_control").unlink()
    (tmp_path / "grader" / "cgroup.subtree_control").mkdir()  # unwritable, as with processes in it
    sibling = _Cgroup._make_v2(mounts, "/grader", "olm-b", ["memory", "pids"], missing)
    assert sibling == tmp_path / "olm-b" and not missing
    assert _Cgroup._make_v2(mounts, "/grader", "olm-c", ["memory", "hugetlb"], missing) is None
    assert "hugetlb" in missing["cgroup-memory"]


# ---------------------------------------------------------------------------------------------
# bubblewrap: the grader itself runs as an unprivileged user
def _runs_unprivileged(python: str, code: str, cwd: str) -> bool:
    """Can the unprivileged user start ``python`` from a process of its own (not only from
    setpriv, which may still hold root's capabilities when it executes) and run ``code``?"""
    r = subprocess.run(
        [
            "setpriv",
            f"--reuid={UNPRIVILEGED_UID}",
            f"--regid={UNPRIVILEGED_UID}",
            "--clear-groups",
            "/bin/sh",
            "-c",
            'exec "$0" -c "$1"',
            python,
            code,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": cwd, "PYTHONPATH": str(REPO)},
    )
    return r.returncode == 0


def unprivileged_workspace() -> Path:
    """A folder (under /tmp, mode 755) for an unprivileged grader's files; remove it with
    shutil.rmtree when done."""
    ws = Path(tempfile.mkdtemp(prefix="olm-unpriv-"))
    ws.chmod(0o755)
    return ws


def unprivileged_python(ws: Path) -> str:
    """An interpreter with the course's packages that ``UNPRIVILEGED_UID`` can start: this one,
    or (when it lives under a folder only root may enter, e.g. pyenv in /root) a venv in ``ws``
    made from a system Python of the same version whose site-packages is this environment's.
    Skips, with the reason, when there is none, or without root, setpriv or bwrap."""
    import site

    if os.geteuid() != 0:
        pytest.skip("needs root to run the grader as an unprivileged user")
    for tool in ("setpriv", "bwrap"):
        if not shutil.which(tool):
            pytest.skip(f"`{tool}` is not installed (apt-get install util-linux bubblewrap)")
    check = "import torch, ipykernel, jupyter_client, nbgrader, course_lib"
    if _runs_unprivileged(sys.executable, check, str(ws)):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if system is None:
        pytest.skip(
            f"{sys.executable} cannot be started by uid {UNPRIVILEGED_UID} and there is "
            f"no system {version} to build one from"
        )
    shim = ws / "venv"
    (shim / "bin").mkdir(parents=True)
    (shim / "lib" / version).mkdir(parents=True)
    (shim / "bin" / "python").symlink_to(system)
    (shim / "lib" / version / "site-packages").symlink_to(os.path.realpath(site.getsitepackages()[0]))
    (shim / "pyvenv.cfg").write_text(f"home = {Path(system).parent}\ninclude-system-site-packages = false\n")
    python = str(shim / "bin" / "python")
    _copy_console_scripts(Path(sys.executable).parent, shim / "bin", python)
    if not _runs_unprivileged(python, check, str(ws)):
        pytest.skip(
            f"neither {sys.executable} nor a {version} venv over its site-packages can be "
            f"started by uid {UNPRIVILEGED_UID} (is the environment world-readable?)"
        )
    return python


def _copy_console_scripts(src: Path, dest: Path, python: str) -> None:
    """The environment's command-line scripts (``alembic``, which nbgrader runs, ``jupyter``...)
    for the venv in ``dest``: the same scripts, started by its ``python``."""
    for script in src.iterdir():
        if script.name.startswith("python") or not script.is_file():
            continue
        try:
            first, rest = script.read_text().split("\n", 1)
        except (UnicodeDecodeError, ValueError):
            continue
        if first.startswith("#!") and "python" in first:
            (dest / script.name).write_text(f"#!{python}\n{rest}")
            (dest / script.name).chmod(0o755)


def unprivileged_env(ws: Path) -> dict[str, str]:
    """The unprivileged grader's environment: its own HOME and TMPDIR, and a credential that
    must never reach student code."""
    for sub in ("home", "tmp"):
        (ws / sub).mkdir(exist_ok=True)
        os.chown(ws / sub, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    path = f"{ws / 'venv' / 'bin'}:" if (ws / "venv").is_dir() else f"{Path(sys.executable).parent}:"
    return {
        "PATH": path + "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(ws / "home"),
        "TMPDIR": str(ws / "tmp"),
        "LANG": "C.UTF-8",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "OLM_SECRET_TOKEN": "do-not-leak",
    }


def run_unprivileged(python: str, args: list[str], ws: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={UNPRIVILEGED_UID}",
            f"--regid={UNPRIVILEGED_UID}",
            "--clear-groups",
            python,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ws / "home"),
        env=unprivileged_env(ws),
    )


# What the unprivileged grader does: start bubblewrap kernels and report what they could do.
UNPRIVILEGED_GRADER = r"""
import json, os, sys
from pathlib import Path
from course_lib.grading.sandbox import KernelDied, SandboxKernel, SandboxLimits, isolation_level

cfg = json.loads(sys.argv[1])
course, shared = Path(cfg["course"]), Path(cfg["shared"])
out = {"level": isolation_level(), "grader_uid": os.getuid()}

def stdout_json(r):
    assert r["status"] == "ok", r
    return json.loads("".join(o["text"] for o in r["outputs"] if o.get("name") == "stdout"))

k = SandboxKernel(course, SandboxLimits(call_timeout_s=5)).start()
out.update(mode=k.mode, applied=k.limits_applied, missing=k.limits_unavailable, workdir=str(k.workdir))
out["probe"] = stdout_json(k.execute(cfg["probe"]))
out["writes"] = stdout_json(k.execute(cfg["writes"]))
out["timeout"] = k.execute("while True:\n    pass")["ename"]
out["after_timeout"] = k.execute("x = 6 * 7")["status"]
try:
    k.execute("import os; os._exit(3)", timeout=60)
    out["exit"] = "still alive"
except KernelDied:
    out["exit"] = "KernelDied"
child = k.proc.child_pid
k.stop()
try:
    out["kernel_gone"] = "\nState:\tZ" in open(f"/proc/{child}/status").read()
except OSError:
    out["kernel_gone"] = True
out["workdir_gone"] = not Path(out["workdir"]).exists()

limits = SandboxLimits(call_timeout_s=60, tmp_mb=16)
with SandboxKernel(course, limits) as greedy:
    out["threads"] = stdout_json(greedy.execute(cfg["threads"]))
    with SandboxKernel(course, limits) as second:
        out["second"] = stdout_json(second.execute(cfg["second"]))
    out["fill"] = stdout_json(greedy.execute(cfg["fill"]))
    if "cgroup-memory" in greedy.limits_applied:
        try:
            out["memory"] = stdout_json(greedy.execute(cfg["memory"]))
        except KernelDied:
            out["memory"] = "KernelDied"
    greedy_child = greedy.proc.child_pid
try:  # stopped while running its threads: gone with them
    out["greedy_gone"] = "\nState:\tZ" in open(f"/proc/{greedy_child}/status").read()
except OSError:
    out["greedy_gone"] = True
print(json.dumps(out))
"""
# Writes the kernel must not be able to make: a folder the unprivileged user can write on the
# host, the course folder, and the folders every sandbox hides.
UNPRIVILEGED_WRITES = r"""
import json, sys
made = {}
for path in %r:
    try:
        open(path, "w").write("x")
        made[path] = True
    except OSError:
        made[path] = False
print(json.dumps(made))
"""


@pytest.fixture(scope="module")
def unprivileged():
    """One run of UNPRIVILEGED_GRADER as uid 65534, with what it saw; and the folders."""
    ws = unprivileged_workspace()
    try:
        python = unprivileged_python(ws)
        course, shared = ws / "course", ws / "shared"
        (course / "solutions").mkdir(parents=True)
        (course / "gradebook.db").write_text("grades")
        shared.mkdir(mode=0o777)
        shared.chmod(0o777)
        for p in [course, *course.rglob("*")]:
            os.chown(p, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        targets = [
            str(shared / "planted"),
            str(course / "planted"),
            "/var/tmp/olm-planted",
            str(ws / "home" / "planted"),
        ]
        cfg = {
            "course": str(course),
            "shared": str(shared),
            "probe": PROBE % (str(REPO / "solutions"), str(course / "gradebook.db")),
            "writes": UNPRIVILEGED_WRITES % (targets,),
            "threads": THREADS,
            "second": SECOND_KERNEL_THREADS,
            "fill": FILL % {"mb": 16},
            "memory": MEMORY,
        }
        r = run_unprivileged(python, ["-c", UNPRIVILEGED_GRADER, json.dumps(cfg)], ws, timeout=400)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        seen = json.loads(r.stdout.strip().splitlines()[-1])
        planted = {t: os.path.exists(t) for t in targets}
        yield seen, planted
    finally:
        if os.path.exists("/var/tmp/olm-planted"):
            os.remove("/var/tmp/olm-planted")
        shutil.rmtree(ws, ignore_errors=True)


def test_unprivileged_grader_gets_bubblewrap(unprivileged):
    seen, _ = unprivileged
    assert seen["grader_uid"] == UNPRIVILEGED_UID
    assert seen["level"] == "bubblewrap" and seen["mode"] == "bubblewrap", seen


def test_bubblewrap_kernel_is_isolated(unprivileged):
    seen, planted = unprivileged
    p = seen["probe"]
    assert p["cwd"] == seen["workdir"]
    assert not p["sees_repo"], "the kernel saw the instructor's solutions/"
    assert not p["sees_other"], "the kernel saw the course folder (gradebook)"
    assert not p["network"] and not p["shared_write"], p
    assert p["pid"] == 1 and len(p["procs"]) <= 3, p  # a PID namespace of its own
    assert "OLM_SECRET_TOKEN" not in p["env_keys"] and "OLM_SECRET_TOKEN" not in p["initial_env"]
    assert not any(seen["writes"].values()), seen["writes"]  # nothing outside its work folder
    assert not any(planted.values()), planted


def test_bubblewrap_kernel_can_be_interrupted_and_killed(unprivileged):
    seen, _ = unprivileged
    assert seen["timeout"] == "TimeoutError" and seen["after_timeout"] == "ok", seen
    assert seen["exit"] == "KernelDied"
    assert seen["kernel_gone"] and seen["workdir_gone"] and seen["greedy_gone"], seen


def test_bubblewrap_threads_do_not_starve_another(unprivileged):
    seen, _ = unprivileged
    if "nproc-per-userns" not in seen["applied"]:
        pytest.skip(f"no per-submission process limit here: {seen['missing'].get('nproc-per-userns')}")
    assert seen["threads"]["started"] < 300 and seen["threads"]["error"], seen["threads"]
    assert seen["second"] == {"ok": True}


def test_bubblewrap_tmp_is_capped(unprivileged):
    seen, _ = unprivileged
    assert "tmpfs-tmp" in seen["applied"], seen
    assert seen["fill"]["tmpdir"]["error"] == "ENOSPC" and seen["fill"]["tmpdir"]["written_mb"] <= 16, seen[
        "fill"
    ]
    if "tmpfs-workdir" not in seen["applied"]:
        pytest.skip(f"the work folder is not capped in total here: {seen['missing'].get('tmpfs-workdir')}")
    assert seen["fill"]["workdir"]["error"] == "ENOSPC", seen["fill"]


def test_bubblewrap_children_share_one_memory_limit(unprivileged):
    seen, _ = unprivileged
    if "memory" not in seen:
        pytest.skip(f"no cgroup for an unprivileged grader here: {seen['missing'].get('cgroup-memory')}")
    assert seen["memory"] == "KernelDied" or any(c == -9 for c in seen["memory"]), seen["memory"]
