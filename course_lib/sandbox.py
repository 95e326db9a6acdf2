"""Run an IPython kernel for untrusted student code in a throwaway sandbox.

When the grader runs as root on Linux with ``unshare`` available (containers, CI, a course
server), the kernel gets:

* a **mount namespace** in which the course directory (gradebook, ``solutions/``, other
  students' submissions, ``.git``), ``/tmp`` and the grader's home are replaced by empty
  tmpfs mounts; only the Python environment, ``course_lib`` and this submission's own work
  folder are mounted back, read-only except the work folder;
* a **network namespace** with no interfaces (no network at all; the kernel talks to the grader
  over Unix sockets in its work folder);
* a **PID namespace** (it cannot see or signal the grader);
* an **unprivileged user** (``nobody``), so it cannot undo the mounts;
* **resource limits**: address space (memory) and CPU seconds; the grader adds wall-clock
  timeouts per call and kills the whole process group at the end;
* a **scrubbed environment**: no grader variables or credentials, ``HF_HUB_OFFLINE=1``.

Elsewhere (not root, macOS) the kernel still gets the resource limits, the scrubbed
environment and a private work folder, but can read whatever the grader's user can read:
:func:`isolation_level` says which, and the grade command warns.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["SandboxLimits", "SandboxKernel", "isolation_level", "KernelDied"]

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


def isolation_level() -> str:
    """"namespaces" (full OS isolation available) or "limits-only" (resource limits and a
    scrubbed environment, but the kernel runs as the grader's user)."""
    if sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("unshare"):
        r = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "true"],
                           capture_output=True, timeout=20)
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
        "JUPYTER_RUNTIME_DIR": str(workdir / ".runtime"),
        "IPYTHONDIR": str(workdir / ".ipython"),
        "MPLCONFIGDIR": str(workdir / ".mpl"),
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
            "/srv", "/mnt", "/opt/grading"}
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


def _boot(config_path: str) -> None:  # pragma: no cover - runs inside the sandbox
    """Entry point inside the namespaces: hide, drop privileges, limit, exec the kernel."""
    cfg = _BootConfig(**json.loads(Path(config_path).read_text()))
    if cfg.isolate:
        stage = Path("/run/olm-sandbox-stage")  # /run is not hidden; a private mount point
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
        subprocess.run(["mkdir", "-p", str(stage)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(stage)], check=True)
        keep = list(dict.fromkeys(cfg.keep + [cfg.workdir]))
        for i, path in enumerate(keep):  # park what must stay visible
            (stage / str(i)).mkdir()
            subprocess.run(["mount", "--bind", path, str(stage / str(i))], check=True)
        for path in cfg.hide:  # hide everything else under those roots
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", path], check=True)
        for i, path in enumerate(keep):  # and mount the parked folders back
            subprocess.run(["mkdir", "-p", path], check=True)
            subprocess.run(["mount", "--bind", str(stage / str(i)), path], check=True)
            if path != cfg.workdir:
                subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True)
        subprocess.run(["umount", "-l", str(stage)], check=False)
    resource.setrlimit(resource.RLIMIT_AS, (cfg.memory_bytes, cfg.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cfg.cpu_seconds, cfg.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (256, 256))
    os.chdir(cfg.workdir)
    if cfg.isolate:
        os.setgroups([])
        os.setgid(NOBODY_GID)
        os.setuid(NOBODY_UID)
    os.execve(cfg.python, [cfg.python, "-m", "ipykernel_launcher", "-f", cfg.connection_file,
                           "--HistoryManager.enabled=False"], cfg.env)


class SandboxKernel:
    """An ipykernel in a sandbox, driven with a jupyter_client blocking client.

    >>> with SandboxKernel(course_root=Path(".")) as k:            # doctest: +SKIP
    ...     k.execute("x = 1 + 1")
    """

    def __init__(self, course_root: Path, limits: SandboxLimits | None = None,
                 keep: list[str] | None = None, isolate: bool | None = None):
        self.limits = limits or SandboxLimits()
        self.course_root = Path(course_root).resolve()
        self.isolate = (isolation_level() == "namespaces") if isolate is None else isolate
        self.workdir = Path(tempfile.mkdtemp(prefix="olm-sbx-"))
        self.workdir.chmod(0o755)
        self._keep = list(keep or [])
        self.proc: subprocess.Popen | None = None
        self.client = None

    # -- life cycle -------------------------------------------------------------------------
    def start(self, ready_timeout: float = 120.0) -> "SandboxKernel":
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        conn = self.workdir / "kernel.json"
        write_connection_file(str(conn), transport="ipc", ip=str(self.workdir / "ipc"))
        for sub in (".runtime", ".ipython", ".mpl"):
            (self.workdir / sub).mkdir(exist_ok=True)
        repo = Path(__file__).resolve().parent.parent
        prefix = Path(sys.prefix).resolve()
        keep = [str(prefix), str(repo / "course_lib")] + self._keep
        base_prefix = Path(sys.base_prefix).resolve()
        if base_prefix != prefix:
            keep.append(str(base_prefix))
        cache = os.environ.get("OPEN_LLM_LAB_CACHE") or str(Path.home() / ".cache" / "open-llm-lab")
        keep_cache = cache if Path(cache).exists() else None
        if keep_cache:
            keep.append(keep_cache)
        cfg = _BootConfig(
            workdir=str(self.workdir), connection_file=str(conn),
            hide=_hidden_paths(self.course_root) if self.isolate else [],
            keep=[k for k in keep if Path(k).exists()],
            env=_scrubbed_env(self.workdir, keep_cache),
            memory_bytes=int(self.limits.memory_gb * 2**30),
            cpu_seconds=int(self.limits.cpu_seconds), isolate=self.isolate)
        cfg.env["PYTHONPATH"] = str(repo)  # course_lib importable even if installed editable
        boot = self.workdir / "boot.json"
        boot.write_text(json.dumps(asdict(cfg)))
        if self.isolate:
            os.chown(self.workdir, NOBODY_UID, NOBODY_GID)
            for p in self.workdir.rglob("*"):
                os.chown(p, NOBODY_UID, NOBODY_GID)
            cmd = ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child",
                   "--mount-proc", sys.executable, "-c",
                   "import sys; from course_lib.sandbox import _boot; _boot(sys.argv[1])", str(boot)]
        else:
            cmd = [sys.executable, "-c",
                   "import sys; from course_lib.sandbox import _boot; _boot(sys.argv[1])", str(boot)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "kernel.log", "wb"),
                                     start_new_session=True, cwd=str(self.workdir),
                                     env={**os.environ, "PYTHONPATH": str(repo)})
        client = BlockingKernelClient()
        deadline = time.time() + ready_timeout
        while not conn.exists() or conn.stat().st_size == 0:  # written by us already; just in case
            time.sleep(0.05)
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
            except Exception:  # noqa: BLE001 - queue.Empty: nothing yet
                pass
            if reply is None:
                try:
                    msg = self.client.get_shell_msg(timeout=0.01)
                    if msg["parent_header"].get("msg_id") == msg_id:
                        reply = msg
                except Exception:  # noqa: BLE001
                    pass
        content = reply["content"]
        return {"status": content.get("status"), "outputs": outputs,
                "ename": content.get("ename"), "evalue": content.get("evalue")}

    def _on_timeout(self, outputs, timeout) -> dict:
        """Interrupt a cell that ran too long; kill the kernel if it will not stop."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
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
        """Kill the kernel's whole process group (unshare, the kernel and anything it started)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
