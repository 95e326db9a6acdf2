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

from ..paths import COURSE_LIB_DIR, REPO_ROOT, cache_root
from .files import read_text_tail
from .limits import MAX_CELL_OUTPUT_CHARS, MAX_LOG_BYTES, SandboxLimits

__all__ = ["SandboxLimits", "SandboxKernel", "isolation_level", "KernelDied"]

NOBODY_UID = 65534
NOBODY_GID = 65534


class KernelDied(RuntimeError):
    """The sandboxed kernel exited (os._exit, sys.exit in a thread, memory or CPU limit...)."""


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
    hide = {str(course_root), str(REPO_ROOT), "/tmp", "/var/tmp", "/dev/shm", "/root", "/home", "/work",
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
    prefix = Path(sys.prefix).resolve()
    keep = [str(prefix), str(COURSE_LIB_DIR)] + list(extra)
    base_prefix = Path(sys.base_prefix).resolve()
    if base_prefix != prefix:
        keep.append(str(base_prefix))
    cache = str(cache_root())
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


class SandboxKernel:
    """An ipykernel in a sandbox, driven with a jupyter_client blocking client.

    Started by ``unshare`` + exec, or (faster, with ``zygote``) forked from a warm
    :class:`Zygote`; the isolation is the same.

    >>> with SandboxKernel(course_root=Path(".")) as k:            # doctest: +SKIP
    ...     k.execute("x = 1 + 1")
    """

    def __init__(self, course_root: Path, limits: SandboxLimits | None = None,
                 keep: list[str] | None = None, isolate: bool | None = None,
                 zygote=None):
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
        repo = REPO_ROOT
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
            from .zygote import _ZygoteProcess

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
            code = "import sys; from course_lib.grading.sandbox import _boot; _boot(sys.argv[1])"
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
        return read_text_tail(self.workdir / "kernel.log", MAX_LOG_BYTES)[-n:]

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
    def execute(self, code: str, timeout: float | None = None,
                max_output_chars: int = MAX_CELL_OUTPUT_CHARS) -> dict:
        """Run ``code`` in the kernel; return ``{"status", "outputs", "ename", "evalue"}``.

        ``outputs`` are nbformat output dicts holding at most ``max_output_chars`` characters
        of every output type together (streams, display data, error messages and tracebacks):
        a submission printing megabytes, or raising megabyte-long errors, cannot flood the
        grader or its feedback. On timeout the kernel is interrupted; if it does not answer it
        is killed and :class:`KernelDied` raised.
        """
        if not self.alive():
            raise KernelDied("the sandbox kernel is not running")
        timeout = self.limits.call_timeout_s if timeout is None else timeout
        outputs: list[dict] = []
        budget = [max_output_chars]
        truncated = [False]

        def keep(out: dict, size: int) -> None:
            if size <= budget[0]:
                budget[0] -= size
                outputs.append(out)
            elif not truncated[0]:
                truncated[0] = True
                outputs.append({"output_type": "stream", "name": "stdout",
                                "text": f"\n... (output truncated at {max_output_chars:,} characters)\n"})

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                text = str(content.get("text", ""))
                part = text[: max(0, budget[0])]
                if part:
                    keep({"output_type": "stream", "text": part,
                          "name": "stderr" if content.get("name") == "stderr" else "stdout"},
                         len(part))
                if len(part) < len(text):
                    keep({}, budget[0] + 1)  # over the budget: only the truncation notice
            elif kind in ("execute_result", "display_data"):
                data = {k: str(v) for k, v in dict(content.get("data", {})).items()
                        if k in ("text/plain", "image/png", "text/html")}
                out = {"output_type": kind, "data": data, "metadata": {}}
                if kind == "execute_result":
                    out["execution_count"] = content.get("execution_count")
                keep(out, sum(len(v) for v in data.values()))
            elif kind == "error":
                tb = [str(t)[:2000] for t in list(content.get("traceback", []))[-20:]]
                out = {"output_type": "error", "ename": str(content.get("ename"))[:200],
                       "evalue": str(content.get("evalue"))[:2000], "traceback": tb}
                size = len(out["ename"]) + len(out["evalue"]) + sum(len(t) for t in tb)
                if size > budget[0]:  # an error always shows, without its traceback if need be
                    out["traceback"] = []
                    size = len(out["ename"]) + len(out["evalue"])
                    budget[0] = max(budget[0], size)
                keep(out, size)

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
