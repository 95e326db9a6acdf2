"""Kernels by fork from a warm, sandboxed parent (the *zygote*).

Starting a kernel costs ~0.8 s (Python + ipykernel) and the first ``import torch`` another
~1.8 s, per submission. A zygote pays that once per grading process: it enters the sandbox
namespaces, hides the course, imports the heavy modules, then forks one child per submission.
Each child gets fresh mount, PID, network and IPC namespaces of its own (so it sees only its own
work folder and processes), its cgroup, resource limits and a uid of its own, then runs ipykernel
in the already-warm interpreter. The zygote never runs student code.

The zygote needs root (the ``"namespaces"`` level): it mounts in each child's namespace. Under
bubblewrap every kernel would share the zygote's user namespace, in which a child that can mount
can also see its siblings' work folders; rather than rely on dropping capabilities correctly in
each child, :class:`Zygote` refuses to start there and the grader starts each kernel cold, under
its own ``bwrap``.

As root the spool (the folder of the kernels' work folders) is a tmpfs of the kernel's
``tmp_mb`` (plus a little for the zygote's own files): one grading process forks one kernel at a
time, so that is each kernel's private space, full at ``ENOSPC``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..paths import REPO_ROOT
from .files import read_text_tail
from .limits import MAX_LOG_BYTES, SandboxLimits
from .sandbox import (
    _UNSHARE,
    KernelDied,
    _enter_cgroups,
    _hidden_paths,
    _kept_paths,
    _limit_and_drop,
    _mount_hidden,
    _mount_tmpfs,
    _reap_stale_mounts,
    _scrubbed_env,
    _sh,
    _tag,
    _umount,
    isolation_level,
)

__all__ = ["Zygote", "shared_zygote"]

_PRELOAD = ("numpy", "torch", "ipykernel.kernelapp")
_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWNET, _CLONE_NEWPID = 0x00020000, 0x08000000, 0x40000000, 0x20000000
_PR_SET_PDEATHSIG = 1
_SPOOL_SLACK_MB = 2  # the zygote's own files in its spool (zygote.json, zygote.log)


def _libc_call(name: str, *args) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _zygote_kernel(boot: dict, ready_w: int) -> None:  # pragma: no cover - runs inside the sandbox
    """The grandchild: PID 1 of its own namespaces; hides the spool, enters its cgroup, limits,
    drops to its own uid, runs ipykernel. Never returns."""
    code = 71
    try:
        os.close(ready_w)
        os.setsid()
        work = boot["workdir"]
        if boot["isolate"]:
            _mount_hidden([boot["spool"]], [], [work])  # other work folders disappear
            _sh("mount", "-t", "proc", "proc", "/proc")  # this namespace's processes only
            _enter_cgroups(boot["limits"]["cgroup_procs"])
        log = os.open(os.path.join(work, "kernel.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)  # like the cold kernel: stdout (ipykernel's banner) is dropped
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        _limit_and_drop(boot["limits"], work, drop=boot["isolate"])
        _libc_call("prctl", _PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # after setuid: it clears it
        os.environ.clear()
        os.environ.update(boot["env"])
        import tempfile as _tempfile

        _tempfile.tempdir = None  # re-read TMPDIR (the zygote may have cached /tmp)
        sys.argv = ["ipykernel_launcher"]
        from ipykernel.kernelapp import IPKernelApp

        app = IPKernelApp.instance()
        app.initialize(["-f", boot["connection_file"], "--HistoryManager.enabled=False"])
        app.start()
        code = 0
    except BaseException:  # noqa: BLE001 - report to kernel.log, then exit
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _zygote_child(boot: dict, ready_w: int, close_fds: list[int]) -> None:  # pragma: no cover
    """The child: enters new namespaces, forks the kernel (PID 1 there), reports its PID and
    waits for it. Never returns."""
    code = 70
    try:
        for fd in close_fds:
            os.close(fd)
        if boot["isolate"]:
            _libc_call("unshare", _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC)
        kernel = os.fork()
        if kernel == 0:
            _zygote_kernel(boot, ready_w)
        os.write(ready_w, str(kernel).encode())
        os.close(ready_w)
        _, status = os.waitpid(kernel, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
    except BaseException as e:  # noqa: BLE001
        try:
            os.write(ready_w, f"{type(e).__name__}: {e}".encode())
        except OSError:
            pass
    finally:
        os._exit(code & 0xFF)


def _zygote_main(config_path: str) -> None:  # pragma: no cover - runs inside the sandbox
    """The zygote: hide the course, import the heavy modules, then serve one JSON request per
    line on stdin (spawn / poll / signal / kill) with one JSON reply per line on stdout."""
    import importlib

    cfg = json.loads(Path(config_path).read_text())
    ctl_in = os.fdopen(os.dup(0), "r", buffering=1)
    ctl_out = os.fdopen(os.dup(1), "w", buffering=1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    os.environ.clear()
    os.environ.update(cfg["env"])
    if cfg["isolate"]:
        _mount_hidden(cfg["hide"], cfg["keep"], [cfg["spool"]])
    for name in _PRELOAD:
        importlib.import_module(name)
    kernels: dict[int, int] = {}  # child pid -> kernel pid (this namespace's numbering)
    exited: dict[int, int] = {}

    def kill(pid: int) -> int:
        k = kernels.get(pid)
        if k is not None:
            for fn in (os.killpg, os.kill):
                try:
                    fn(k, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if pid not in exited:
            _, status = os.waitpid(pid, 0)
            exited[pid] = os.waitstatus_to_exitcode(status)
            kernels.pop(pid, None)
        return exited[pid]

    ctl_out.write(json.dumps({"ready": True}) + "\n")
    for line in ctl_in:
        try:
            req = json.loads(line)
            op, pid = req.get("op"), req.get("pid")
            if op == "spawn":
                r, w = os.pipe()
                child = os.fork()
                if child == 0:
                    os.close(r)
                    _zygote_child(req["boot"], w, [ctl_in.fileno(), ctl_out.fileno()])
                os.close(w)
                with os.fdopen(r, "rb") as f:
                    said = f.read().decode(errors="replace")
                if said.isdigit():
                    kernels[child] = int(said)
                    reply = {"pid": child}
                else:
                    os.waitpid(child, 0)
                    reply = {"error": f"could not start a kernel: {said[:500]}"}
            elif op == "poll":
                if pid not in exited:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        exited[pid] = os.waitstatus_to_exitcode(status)
                        kernels.pop(pid, None)
                reply = {"exit": exited.get(pid)}
            elif op == "signal":
                if pid in kernels:
                    try:
                        os.killpg(kernels[pid], int(req["sig"]))
                    except (ProcessLookupError, PermissionError):
                        pass
                reply = {}
            elif op == "kill":
                reply = {"exit": kill(pid)}
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as e:  # noqa: BLE001 - report, keep serving
            reply = {"error": f"{type(e).__name__}: {e}"}
        ctl_out.write(json.dumps(reply) + "\n")
    for pid in list(kernels):  # stdin closed: the grader is gone, take every kernel with us
        kill(pid)
    os._exit(0)


class Zygote:
    """A warm, sandboxed parent that forks one kernel per submission (see ``_PRELOAD`` above).

    One zygote serves one grading process, one kernel at a time. Kernels started from it are
    as isolated from the grader and from each other as those started by ``unshare`` directly.
    Under bubblewrap it refuses to start (:class:`KernelDied`, see the module docstring).

    >>> z = Zygote(Path("course")).start()                         # doctest: +SKIP
    >>> with SandboxKernel(Path("course"), zygote=z) as k: ...     # doctest: +SKIP
    """

    def __init__(self, course_root: Path, keep: list[str] | None = None, isolate: bool | None = None):
        import threading

        self.course_root = Path(course_root).resolve()
        level = isolation_level()
        if isolate is None and level == "bubblewrap":
            raise KernelDied(
                "no warm zygote under bubblewrap (it needs root namespaces): "
                "each kernel starts cold under its own bwrap"
            )
        self.isolate = (level == "namespaces") if isolate is None else isolate
        self.mode = "namespaces" if self.isolate else None
        self.keep, self.cache = _kept_paths(list(keep or []))
        self.spool = Path(tempfile.mkdtemp(prefix=f"olm-spool-{_tag()}-"))
        self.spool.chmod(0o755)
        self.proc: subprocess.Popen | None = None
        self._buf = b""
        self._lock = threading.Lock()
        self._spool_mb: int | None = None  # size of the spool's tmpfs (None: not a tmpfs)
        self._spool_problem: str | None = None

    def _mount_spool(self) -> None:
        """As root: the spool becomes a tmpfs (before the zygote starts, so its namespace and
        every kernel's see the same one); its size is set per kernel by :meth:`size_spool`."""
        if not (self.isolate and os.geteuid() == 0):
            self._spool_problem = "the spool is a tmpfs only as root with namespaces"
            return
        _reap_stale_mounts()
        try:
            _mount_tmpfs(self.spool, SandboxLimits().tmp_mb + _SPOOL_SLACK_MB, 0)
            self._spool_mb = SandboxLimits().tmp_mb
        except (OSError, subprocess.SubprocessError) as e:
            self._spool_problem = f"cannot mount a tmpfs on the spool: {e}"

    def size_spool(self, tmp_mb: int) -> str | None:
        """Make the spool's tmpfs ``tmp_mb`` (the next kernel's private space); a problem, or
        None. Shrinking fails while a previous kernel's files still fill it."""
        if self._spool_mb is None:
            return self._spool_problem
        if tmp_mb != self._spool_mb:
            r = subprocess.run(
                ["mount", "-o", f"remount,size={int(tmp_mb) + _SPOOL_SLACK_MB}m", str(self.spool)],
                capture_output=True,
                timeout=30,
            )
            if r.returncode != 0:
                return f"cannot resize the spool's tmpfs: {r.stderr.decode(errors='replace')[:200]}"
            self._spool_mb = tmp_mb
        return None

    def start(self, ready_timeout: float = 120.0) -> "Zygote":
        """Start the zygote and wait until it has imported the heavy modules; on failure its
        spool (and the spool's tmpfs) is removed before the error propagates."""
        try:
            return self._start(ready_timeout)
        except BaseException:
            self.close()
            raise

    def _start(self, ready_timeout: float) -> "Zygote":
        self._mount_spool()
        env = _scrubbed_env(self.spool, self.cache)
        env["PYTHONPATH"] = str(REPO_ROOT)
        hide = _hidden_paths(self.course_root, [str(self.spool.parent)]) if self.isolate else []
        cfg = {"hide": hide, "keep": self.keep, "spool": str(self.spool), "isolate": self.isolate, "env": env}
        path = self.spool / "zygote.json"
        path.write_text(json.dumps(cfg))
        code = "import sys; from course_lib.grading.zygote import _zygote_main; _zygote_main(sys.argv[1])"
        cmd = [sys.executable, "-c", code, str(path)]
        if self.isolate:
            cmd = _UNSHARE + cmd
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.spool / "zygote.log", "wb"),
            start_new_session=True,
            cwd=str(self.spool),
            # scrubbed from the start: a forked kernel can read the
            # zygote's initial environment in /proc/self/environ
            env=env,
        )
        reply = self._read_reply(ready_timeout)
        if not reply.get("ready"):
            raise KernelDied(f"the sandbox zygote did not start: {reply}")
        return self

    def _log_tail(self) -> str:
        return read_text_tail(self.spool / "zygote.log", MAX_LOG_BYTES)[-1500:]

    def _read_reply(self, timeout: float) -> dict:
        import select

        deadline = time.time() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.time()
            if left <= 0:
                raise KernelDied(f"the sandbox zygote did not answer in {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise KernelDied(f"the sandbox zygote exited: {self._log_tail()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def request(self, req: dict, timeout: float = 60.0) -> dict:
        """Send one request; return the reply (raises :class:`KernelDied` if the zygote is gone)."""
        with self._lock:
            if not self.alive():
                raise KernelDied(f"the sandbox zygote is not running: {self._log_tail()}")
            try:
                self.proc.stdin.write((json.dumps(req) + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as e:
                raise KernelDied(f"the sandbox zygote is gone ({e})") from None
            reply = self._read_reply(timeout)
        if "error" in reply:
            raise KernelDied(reply["error"])
        return reply

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Stop the zygote (and any kernel it still runs); remove its spool folder."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # EOF: the zygote kills its kernels and exits
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=30)
        if self._spool_mb is not None:
            problem = _umount(self.spool)
            if problem:
                print(f"course_lib.grading.zygote: {problem}", file=sys.stderr)
            self._spool_mb = None
        shutil.rmtree(self.spool, ignore_errors=True)


class _ZygoteProcess:
    """A kernel forked by a :class:`Zygote`, seen through the zygote."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote, self.pid = zygote, pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                self.returncode = self.zygote.request({"op": "poll", "pid": self.pid})["exit"]
            except KernelDied:
                self.returncode = -9
        return self.returncode

    def signal_group(self, sig: int) -> None:
        try:
            self.zygote.request({"op": "signal", "pid": self.pid, "sig": int(sig)})
        except KernelDied:
            pass

    def kill(self) -> None:
        if self.returncode is None:
            try:
                self.returncode = self.zygote.request({"op": "kill", "pid": self.pid})["exit"]
            except KernelDied:
                self.returncode = -9


_SHARED_ZYGOTES: dict[tuple, Zygote] = {}


def shared_zygote(course_root: Path, keep: list[str] | None = None) -> Zygote:
    """This process's zygote for ``course_root`` (started on first use, closed at exit)."""
    import atexit

    key = (str(Path(course_root).resolve()), tuple(keep or []))
    z = _SHARED_ZYGOTES.get(key)
    if z is None or not z.alive():
        if z is not None:
            z.close()
        z = _SHARED_ZYGOTES[key] = Zygote(course_root, keep).start()
        atexit.register(z.close)
    return z
