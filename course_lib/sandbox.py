"""Run an IPython kernel for untrusted student code in a throwaway sandbox.

When the grader runs as root on Linux with ``unshare`` available (containers, CI, a course
server), the kernel gets:

* a **mount namespace** in which the course directory (gradebook, ``solutions/``, other
  students' submissions, ``.git``), ``/tmp`` and the grader's home are replaced by empty
  tmpfs mounts; only the Python environment, ``course_lib`` and this submission's own work
  folder are mounted back, read-only except the work folder;
* a **network namespace** with no interfaces (no network at all; the kernel talks to the grader
  over Unix sockets in its work folder);
* a **PID namespace** (it cannot see or signal the grader) and an **IPC namespace**;
* an **unprivileged user** (``nobody``), so it cannot undo the mounts;
* **resource limits**: address space (memory) and CPU seconds; the grader adds wall-clock
  timeouts per call and kills the whole process group at the end;
* a **scrubbed environment**: no grader variables or credentials, ``HF_HUB_OFFLINE=1``.

Kernels start cold (``unshare`` + exec, ~2.5 s with ``import torch``) or, with a
:class:`Zygote`, by fork from a warm sandboxed parent that has already imported the heavy
modules; each forked kernel then enters fresh mount, PID, network and IPC namespaces of its own.

Elsewhere (not root, macOS) the kernel still gets the resource limits, the scrubbed
environment and a private work folder, but can read whatever the grader's user can read:
:func:`isolation_level` says which, and the grade command warns.
"""
from __future__ import annotations

import json
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["SandboxLimits", "SandboxKernel", "Zygote", "shared_zygote", "isolation_level", "KernelDied"]

NOBODY_UID = 65534
NOBODY_GID = 65534


class KernelDied(RuntimeError):
    """The sandboxed kernel exited (os._exit, sys.exit in a thread, memory or CPU limit...)."""


@dataclass
class SandboxLimits:
    """Per-submission limits: ``memory_gb`` of address space, ``cpu_seconds`` of CPU time for
    the kernel's whole life, and ``call_timeout_s`` wall seconds for any one cell or call."""

    memory_gb: float = 4.0
    cpu_seconds: int = 900
    call_timeout_s: float = 120.0

    def __post_init__(self):
        if not self.memory_gb > 0.5:
            raise ValueError(f"memory_gb must be > 0.5 (torch alone needs ~0.5 GB), got {self.memory_gb}")
        if not self.cpu_seconds >= 10:
            raise ValueError(f"cpu_seconds must be >= 10, got {self.cpu_seconds}")
        if not self.call_timeout_s > 0:
            raise ValueError(f"call_timeout_s must be > 0, got {self.call_timeout_s}")


# How the grader enters the sandbox namespaces (the probe below checks exactly this command).
_UNSHARE = ["unshare", "--mount", "--net", "--pid", "--ipc", "--fork", "--kill-child", "--mount-proc"]


def isolation_level() -> str:
    """"namespaces" (full OS isolation available) or "limits-only" (resource limits and a
    scrubbed environment, but the kernel runs as the grader's user)."""
    if sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("unshare"):
        r = subprocess.run(_UNSHARE + ["true"], capture_output=True, timeout=20)
        if r.returncode == 0:
            return "namespaces"
    return "limits-only"


def _scrubbed_env(workdir: Path, cache: str | None) -> dict[str, str]:
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "JUPYTER_RUNTIME_DIR": str(workdir / ".runtime"),
        "IPYTHONDIR": str(workdir / ".ipython"),
        "MPLCONFIGDIR": str(workdir / ".mpl"),
        # /tmp is hidden and read-only inside the sandbox: temporary files and torch's compile
        # caches go to the work folder
        "TMPDIR": str(workdir / ".tmp"),
        "TORCHINDUCTOR_CACHE_DIR": str(workdir / ".tmp" / "torchinductor"),
        "XDG_CACHE_HOME": str(workdir / ".cache"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    if cache:
        env["OPEN_LLM_LAB_CACHE"] = cache
    return env


def _hidden_paths(course_root: Path) -> list[str]:
    """Folders replaced by empty tmpfs inside the sandbox."""
    from .resources import cache_dir  # noqa: F401 - only to document where the cache lives

    repo = Path(__file__).resolve().parent.parent
    hide = {str(course_root), str(repo), "/tmp", "/var/tmp", "/dev/shm", "/root", "/home", "/work",
            "/srv", "/mnt", "/opt/grading", "/run/lock"}
    roots = sorted(p for p in hide if Path(p).exists())
    # A folder inside another hidden folder is hidden with it (and could not be mounted on).
    return [p for p in roots if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in roots)]


@dataclass
class _BootConfig:
    workdir: str
    connection_file: str
    hide: list[str]
    keep: list[str]          # mounted back read-only at the same path
    env: dict[str, str]
    memory_bytes: int
    cpu_seconds: int
    isolate: bool
    python: str = field(default_factory=lambda: sys.executable)


def _sh(*cmd: str, check: bool = True) -> None:
    subprocess.run(list(cmd), check=check)


def _mount_hidden(hide: list[str], keep_ro: list[str], keep_rw: list[str]) -> None:
    """Inside a fresh mount namespace, as root: replace each folder in ``hide`` by an empty
    tmpfs, then mount ``keep_ro`` back read-only and ``keep_rw`` back writable, at the same
    paths. Nothing here propagates to the host (the namespace's mounts are made private)."""
    stage = Path("/run/olm-sandbox-stage")  # /run is not hidden; a private mount point
    _sh("mount", "--make-rprivate", "/")
    _sh("mkdir", "-p", str(stage))
    _sh("mount", "-t", "tmpfs", "tmpfs", str(stage))
    keep = list(dict.fromkeys(keep_ro + keep_rw))
    for i, path in enumerate(keep):  # park what must stay visible
        (stage / str(i)).mkdir()
        _sh("mount", "--bind", path, str(stage / str(i)))
    for path in hide:  # hide everything else under those roots
        _sh("mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", path)
    for i, path in enumerate(keep):  # and mount the parked folders back
        _sh("mkdir", "-p", path)
        _sh("mount", "--bind", str(stage / str(i)), path)
        if path not in keep_rw:
            _sh("mount", "-o", "remount,bind,ro", path)
    _sh("umount", "-l", str(stage), check=False)


def _limit_and_drop(memory_bytes: int, cpu_seconds: int, workdir: str, isolate: bool) -> None:
    """Resource limits, the work folder as cwd, and (when isolated) the ``nobody`` user."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (256, 256))
    os.chdir(workdir)
    if isolate:
        os.setgroups([])
        os.setgid(NOBODY_GID)
        os.setuid(NOBODY_UID)


def _boot(config_path: str) -> None:  # pragma: no cover - runs inside the sandbox
    """Entry point inside the namespaces: hide, drop privileges, limit, exec the kernel."""
    cfg = _BootConfig(**json.loads(Path(config_path).read_text()))
    if cfg.isolate:
        _mount_hidden(cfg.hide, cfg.keep, [cfg.workdir])
    _limit_and_drop(cfg.memory_bytes, cfg.cpu_seconds, cfg.workdir, cfg.isolate)
    os.execve(cfg.python, [cfg.python, "-m", "ipykernel_launcher", "-f", cfg.connection_file,
                           "--HistoryManager.enabled=False"], cfg.env)


def _kept_paths(extra: list[str]) -> tuple[list[str], str | None]:
    """Folders a kernel must see (read-only): the Python environment, ``course_lib``, the course
    cache and ``extra``; returns them and the cache folder (None when there is none)."""
    repo = Path(__file__).resolve().parent.parent
    prefix = Path(sys.prefix).resolve()
    keep = [str(prefix), str(repo / "course_lib")] + list(extra)
    base_prefix = Path(sys.base_prefix).resolve()
    if base_prefix != prefix:
        keep.append(str(base_prefix))
    cache = os.environ.get("OPEN_LLM_LAB_CACHE") or str(Path.home() / ".cache" / "open-llm-lab")
    keep_cache = cache if Path(cache).exists() else None
    if keep_cache:
        keep.append(keep_cache)
    return [k for k in keep if Path(k).exists()], keep_cache


class _PopenProcess:
    """The kernel started by ``unshare`` + exec (one process tree per kernel)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def poll(self):
        return self.proc.poll()

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.proc.wait(timeout=30)


# -- the zygote: kernels by fork from a pre-imported parent ------------------------------------
# Starting a kernel costs ~0.8 s (Python + ipykernel) and the first ``import torch`` another
# ~1.8 s, per submission. A zygote pays that once per grading process: it enters the sandbox
# namespaces, hides the course, imports these modules, then forks one child per submission. Each
# child gets fresh mount, PID, network and IPC namespaces of its own (so it sees only its own
# work folder and processes), resource limits and the ``nobody`` user, then runs ipykernel in
# the already-warm interpreter. The zygote never runs student code.
_PRELOAD = ("numpy", "torch", "ipykernel.kernelapp")
_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWNET, _CLONE_NEWPID = 0x00020000, 0x08000000, 0x40000000, 0x20000000
_PR_SET_PDEATHSIG = 1


def _libc_call(name: str, *args) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _zygote_kernel(boot: dict, ready_w: int) -> None:  # pragma: no cover - runs inside the sandbox
    """The grandchild: PID 1 of its own namespaces; hides the spool, limits, drops to nobody,
    runs ipykernel. Never returns."""
    code = 71
    try:
        os.close(ready_w)
        os.setsid()
        work = boot["workdir"]
        if boot["isolate"]:
            _mount_hidden([boot["spool"]], [], [work])    # other work folders disappear
            _sh("mount", "-t", "proc", "proc", "/proc")  # this namespace's processes only
        log = os.open(os.path.join(work, "kernel.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)  # like the cold kernel: stdout (ipykernel's banner) is dropped
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        _limit_and_drop(boot["memory_bytes"], boot["cpu_seconds"], work, boot["isolate"])
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
    kernels: dict[int, int] = {}   # child pid -> kernel pid (this namespace's numbering)
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

    >>> z = Zygote(Path("course")).start()                         # doctest: +SKIP
    >>> with SandboxKernel(Path("course"), zygote=z) as k: ...     # doctest: +SKIP
    """

    def __init__(self, course_root: Path, keep: list[str] | None = None, isolate: bool | None = None):
        import threading

        self.course_root = Path(course_root).resolve()
        self.isolate = (isolation_level() == "namespaces") if isolate is None else isolate
        self.keep, self.cache = _kept_paths(list(keep or []))
        self.spool = Path(tempfile.mkdtemp(prefix="olm-spool-"))
        self.spool.chmod(0o755)
        self.proc: subprocess.Popen | None = None
        self._buf = b""
        self._lock = threading.Lock()

    def start(self, ready_timeout: float = 120.0) -> "Zygote":
        repo = Path(__file__).resolve().parent.parent
        env = _scrubbed_env(self.spool, self.cache)
        env["PYTHONPATH"] = str(repo)
        cfg = {"hide": _hidden_paths(self.course_root) if self.isolate else [], "keep": self.keep,
               "spool": str(self.spool), "isolate": self.isolate, "env": env}
        path = self.spool / "zygote.json"
        path.write_text(json.dumps(cfg))
        code = "import sys; from course_lib.sandbox import _zygote_main; _zygote_main(sys.argv[1])"
        cmd = [sys.executable, "-c", code, str(path)]
        if self.isolate:
            cmd = _UNSHARE + cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.spool / "zygote.log", "wb"),
                                     start_new_session=True, cwd=str(self.spool),
                                     # scrubbed from the start: a forked kernel can read the
                                     # zygote's initial environment in /proc/self/environ
                                     env=env)
        reply = self._read_reply(ready_timeout)
        if not reply.get("ready"):
            raise KernelDied(f"the sandbox zygote did not start: {reply}")
        return self

    def _log_tail(self) -> str:
        try:
            return (self.spool / "zygote.log").read_text(errors="replace")[-1500:]
        except OSError:
            return ""

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


class SandboxKernel:
    """An ipykernel in a sandbox, driven with a jupyter_client blocking client.

    Started by ``unshare`` + exec, or (faster, with ``zygote``) forked from a warm
    :class:`Zygote`; the isolation is the same.

    >>> with SandboxKernel(course_root=Path(".")) as k:            # doctest: +SKIP
    ...     k.execute("x = 1 + 1")
    """

    def __init__(self, course_root: Path, limits: SandboxLimits | None = None,
                 keep: list[str] | None = None, isolate: bool | None = None,
                 zygote: "Zygote | None" = None):
        self.limits = limits or SandboxLimits()
        self.course_root = Path(course_root).resolve()
        self.zygote = zygote
        if zygote is not None:
            if not zygote.alive():
                raise KernelDied("the sandbox zygote is not running (start() it, or pass zygote=None)")
            self.isolate = zygote.isolate
        else:
            self.isolate = (isolation_level() == "namespaces") if isolate is None else isolate
        self.workdir = Path(tempfile.mkdtemp(prefix="olm-sbx-", dir=zygote.spool if zygote else None))
        self.workdir.chmod(0o755)
        self._keep = list(keep or [])
        self.proc: _PopenProcess | _ZygoteProcess | None = None
        self.client = None

    # -- life cycle -------------------------------------------------------------------------
    def start(self, ready_timeout: float = 120.0) -> "SandboxKernel":
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        conn = self.workdir / "kernel.json"
        write_connection_file(str(conn), transport="ipc", ip=str(self.workdir / "ipc"))
        for sub in (".runtime", ".ipython", ".mpl", ".tmp", ".cache"):
            (self.workdir / sub).mkdir(exist_ok=True)
        repo = Path(__file__).resolve().parent.parent
        if self.isolate:
            os.chown(self.workdir, NOBODY_UID, NOBODY_GID)
            for p in self.workdir.rglob("*"):
                os.chown(p, NOBODY_UID, NOBODY_GID)
        if self.zygote is not None:
            env = _scrubbed_env(self.workdir, self.zygote.cache)
            env["PYTHONPATH"] = str(repo)
            boot = {"workdir": str(self.workdir), "connection_file": str(conn), "env": env,
                    "spool": str(self.zygote.spool), "isolate": self.isolate,
                    "memory_bytes": int(self.limits.memory_gb * 2**30),
                    "cpu_seconds": int(self.limits.cpu_seconds)}
            pid = self.zygote.request({"op": "spawn", "boot": boot})["pid"]
            self.proc = _ZygoteProcess(self.zygote, pid)
        else:
            keep, keep_cache = _kept_paths(self._keep)
            cfg = _BootConfig(
                workdir=str(self.workdir), connection_file=str(conn),
                hide=_hidden_paths(self.course_root) if self.isolate else [], keep=keep,
                env=_scrubbed_env(self.workdir, keep_cache),
                memory_bytes=int(self.limits.memory_gb * 2**30),
                cpu_seconds=int(self.limits.cpu_seconds), isolate=self.isolate)
            cfg.env["PYTHONPATH"] = str(repo)  # course_lib importable even if installed editable
            boot_path = self.workdir / "boot.json"
            boot_path.write_text(json.dumps(asdict(cfg)))
            code = "import sys; from course_lib.sandbox import _boot; _boot(sys.argv[1])"
            cmd = [sys.executable, "-c", code, str(boot_path)]
            if self.isolate:
                cmd = _UNSHARE + cmd
            self.proc = _PopenProcess(subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(self.workdir / "kernel.log", "wb"), start_new_session=True,
                cwd=str(self.workdir), env={**os.environ, "PYTHONPATH": str(repo)}))
        client = BlockingKernelClient()
        deadline = time.time() + ready_timeout
        client.load_connection_file(str(conn))
        client.start_channels()
        while True:
            if self.proc.poll() is not None:
                raise KernelDied(f"the sandbox kernel exited while starting: {self.log_tail()}")
            try:
                client.wait_for_ready(timeout=2)
                break
            except RuntimeError:
                if time.time() > deadline:
                    raise KernelDied(f"the sandbox kernel did not start in {ready_timeout} s: "
                                     f"{self.log_tail()}") from None
        self.client = client
        return self

    def log_tail(self, n: int = 1500) -> str:
        try:
            return (self.workdir / "kernel.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.client is not None:
            try:
                self.client.stop_channels()
            except Exception:  # noqa: BLE001
                pass
        self.stop_process()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- execution ---------------------------------------------------------------------------
    def execute(self, code: str, timeout: float | None = None, max_output_chars: int = 20_000) -> dict:
        """Run ``code`` in the kernel; return ``{"status", "outputs", "ename", "evalue"}``.

        ``outputs`` are nbformat output dicts, capped at ``max_output_chars`` of text in all
        (a submission printing megabytes cannot flood the grader). On timeout the kernel is
        interrupted; if it does not answer it is killed and :class:`KernelDied` raised.
        """
        if not self.alive():
            raise KernelDied("the sandbox kernel is not running")
        timeout = self.limits.call_timeout_s if timeout is None else timeout
        outputs: list[dict] = []
        budget = [max_output_chars]

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                text = content.get("text", "")[: max(0, budget[0])]
                budget[0] -= len(content.get("text", ""))
                if text:
                    outputs.append({"output_type": "stream", "name": content["name"], "text": text})
            elif kind in ("execute_result", "display_data") and budget[0] > 0:
                data = {k: v for k, v in content.get("data", {}).items()
                        if k in ("text/plain", "image/png", "text/html") and len(str(v)) < 2_000_000}
                budget[0] -= sum(len(str(v)) for v in data.values()) // 50
                out = {"output_type": kind, "data": data, "metadata": {}}
                if kind == "execute_result":
                    out["execution_count"] = content.get("execution_count")
                outputs.append(out)
            elif kind == "error":
                outputs.append({"output_type": "error", "ename": str(content.get("ename"))[:200],
                                "evalue": str(content.get("evalue"))[:2000],
                                "traceback": [str(t)[:2000] for t in content.get("traceback", [])[-20:]]})

        msg_id = self.client.execute(code, store_history=False, allow_stdin=False)
        deadline = time.time() + timeout
        reply = None
        idle = False
        try:
            while reply is None or not idle:
                if not self.alive():
                    raise KernelDied(f"the kernel died: {self.log_tail(300)}")
                if time.time() > deadline:
                    return self._on_timeout(outputs, timeout)
                try:
                    msg = self.client.get_iopub_msg(timeout=0.2)
                    if msg["parent_header"].get("msg_id") == msg_id:
                        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                            idle = True
                        else:
                            hook(msg)
                except queue.Empty:
                    pass
                if reply is None:
                    try:
                        msg = self.client.get_shell_msg(timeout=0.01)
                        if msg["parent_header"].get("msg_id") == msg_id:
                            reply = msg
                    except queue.Empty:
                        pass
        except KernelDied:
            raise
        except BaseException:
            # The caller gave up (a test's own time limit raised in this thread, Ctrl-C):
            # stop the student's cell too, so the next call does not queue behind it.
            if self.alive():
                self.proc.signal_group(signal.SIGINT)
            raise
        content = reply["content"]
        return {"status": content.get("status"), "outputs": outputs,
                "ename": content.get("ename"), "evalue": content.get("evalue")}

    def _on_timeout(self, outputs, timeout) -> dict:
        """Interrupt a cell that ran too long; kill the kernel if it will not stop."""
        if self.alive():
            try:
                self.proc.signal_group(signal.SIGINT)
                end = time.time() + 10
                while time.time() < end and self.alive():
                    try:
                        msg = self.client.get_shell_msg(timeout=0.5)
                        if msg["msg_type"] == "execute_reply":
                            return {"status": "error", "outputs": outputs, "ename": "TimeoutError",
                                    "evalue": f"interrupted after {timeout:.0f} s (an infinite loop?)"}
                    except Exception:  # noqa: BLE001
                        pass
            except ProcessLookupError:
                pass
        self.stop_process()
        raise KernelDied(f"timed out after {timeout:.0f} s and did not stop when interrupted")

    def stop_process(self) -> None:
        """Kill the kernel's whole process tree (its namespaces, the kernel and its children)."""
        if self.proc is not None:
            self.proc.kill()
