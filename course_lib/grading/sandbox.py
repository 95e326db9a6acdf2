"""Run an IPython kernel for untrusted student code in a throwaway sandbox.

Isolation comes in three levels (:func:`isolation_level`):

``"namespaces"`` (the grader is root on Linux and ``unshare`` works: containers, CI, a course
server). The kernel gets

* a **mount namespace** in which the course directory (gradebook, ``solutions/``, other
  students' submissions, ``.git``), ``/tmp``, the parent of the work folders and the grader's
  home are replaced by empty tmpfs mounts; only the Python environment, ``course_lib`` and this
  submission's own work folder are mounted back, read-only except the work folder;
* a **network namespace** with no interfaces (no network at all; the kernel talks to the grader
  over Unix sockets in its work folder);
* a **PID namespace** (it cannot see or signal the grader) and an **IPC namespace**;
* an **unprivileged user of its own** (``SANDBOX_UID_BASE`` + a slot no other running sandbox
  holds), so it cannot undo the mounts and its process count is its own;
* **per-submission limits**: a cgroup (memory of the whole process tree, number of tasks)
  where the cgroup file system is writable, a size-capped tmpfs as its work folder, and
  resource limits per process (address space, CPU seconds, processes of its uid, file size);
  the grader adds wall-clock timeouts per call and kills the whole process tree at the end;
* a **scrubbed environment**: no grader variables or credentials, ``HF_HUB_OFFLINE=1``.

``"bubblewrap"`` (no root needed: ``bwrap`` with unprivileged user namespaces). Each kernel runs
under its own ``bwrap``: new user, mount, PID, IPC, UTS, cgroup and network namespaces (no
interfaces), nested user namespaces disabled, a new session, the host file system read-only with
the same folders hidden by empty read-only tmpfs, ``/tmp`` and ``/dev/shm`` private writable
tmpfs of ``tmp_mb`` each, only its own work folder writable. It runs as the grader's uid, but in
a user namespace of its own: on Linux >= 5.14 its process limit counts its own processes only.
A cgroup is used only where the grader may create one (delegated cgroup v2); the work folder,
which the grader must see, is capped per file (``RLIMIT_FSIZE``), not in total.

``"limits-only"`` (not root and no working bubblewrap, macOS): the resource limits, the scrubbed
environment and a private work folder, but the kernel can read whatever the grader's user can
read; the grade command warns.

Kernels start cold (``unshare`` or ``bwrap`` + exec, ~2.5 s with ``import torch``) or, with a
:class:`~.zygote.Zygote` (namespaces only), by fork from a warm sandboxed parent that has
already imported the heavy modules; each forked kernel then enters fresh mount, PID, network and
IPC namespaces of its own. Which per-submission limits a kernel really got is listed in
:attr:`SandboxKernel.limits_applied` (and why the others are missing in
``limits_unavailable``): a mechanism the machine lacks is skipped, never faked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import queue
import re
import resource
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..paths import COURSE_LIB_DIR, REPO_ROOT, cache_root
from .files import read_text_tail
from .limits import MAX_CELL_OUTPUT_CHARS, MAX_LOG_BYTES, SandboxLimits

__all__ = [
    "SandboxLimits",
    "SandboxKernel",
    "isolation_level",
    "isolation_problems",
    "KernelDied",
    "SANDBOX_UID_BASE",
]

NOBODY_UID = 65534
NOBODY_GID = 65534
# Kernels started as root run as SANDBOX_UID_BASE + slot (gid the same), one slot per running
# kernel machine-wide (a lock file in _UID_SLOT_DIR): no passwd entry is needed, and
# RLIMIT_NPROC, which counts the processes of a uid, is then per submission.
SANDBOX_UID_BASE = 200_000
SANDBOX_UID_SLOTS = 4096
_UID_SLOT_DIR = Path("/run/olm-sandbox-uids")


class KernelDied(RuntimeError):
    """The sandboxed kernel exited (os._exit, sys.exit in a thread, memory or CPU limit...)."""


# How the grader enters the sandbox namespaces as root (the probe below checks exactly this).
_UNSHARE = ["unshare", "--mount", "--net", "--pid", "--ipc", "--fork", "--kill-child", "--mount-proc"]
# bubblewrap's namespace and process options, most restrictive first (the probe picks the first
# that works: --disable-userns needs bwrap >= 0.8). --as-pid-1: the kernel is PID 1 of its
# namespace, as under unshare (when it exits, every process it left dies with it);
# --new-session: its own session and process group (no terminal to inject into; the grader
# interrupts it with killpg on that group).
_BWRAP_VARIANTS = (
    [
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",
    ],
    ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--as-pid-1"],
)
_BWRAP_SCRATCH = ("/tmp", "/dev/shm")  # noqa: S108 - private, writable, size-capped tmpfs under bubblewrap
_PROBE_PROBLEMS: dict[str, str] = {}  # why a level was not available (filled by the probe)
_BWRAP_CHOSEN: list[list[str]] = []  # the _BWRAP_VARIANTS entry the probe found working


# ---------------------------------------------------------------------------------------------
# which isolation this machine offers
def isolation_level() -> str:
    """``"namespaces"`` (root with ``unshare``), ``"bubblewrap"`` (``bwrap`` with user
    namespaces, no root needed) or ``"limits-only"`` (resource limits and a scrubbed
    environment, but the kernel runs as the grader's user and sees what it sees).

    Probed once per process and user by running the exact command a kernel is started with."""
    return _probe_level(os.geteuid())


def isolation_problems() -> dict[str, str]:
    """Why the better levels are unavailable here (``{"namespaces": reason, ...}``)."""
    isolation_level()
    return dict(_PROBE_PROBLEMS)


@functools.lru_cache(maxsize=None)
def _probe_level(euid: int) -> str:
    if not sys.platform.startswith("linux"):
        _PROBE_PROBLEMS["namespaces"] = _PROBE_PROBLEMS["bubblewrap"] = "needs Linux"
        return "limits-only"
    if euid != 0:
        _PROBE_PROBLEMS["namespaces"] = "the grader is not root"
    elif not shutil.which("unshare"):
        _PROBE_PROBLEMS["namespaces"] = "`unshare` (util-linux) is not installed"
    elif _probe_unshare():
        return "namespaces"
    if not shutil.which("bwrap"):
        _PROBE_PROBLEMS["bubblewrap"] = "`bwrap` is not installed (apt-get install bubblewrap)"
    elif _probe_bwrap(euid):
        return "bubblewrap"
    return "limits-only"


def _probe_unshare() -> bool:
    """Does ``_UNSHARE`` work here? (It fails in containers without CAP_SYS_ADMIN.)"""
    try:
        r = subprocess.run(_UNSHARE + ["true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        _PROBE_PROBLEMS["namespaces"] = f"`unshare` failed: {e}"
        return False
    if r.returncode != 0:
        _PROBE_PROBLEMS["namespaces"] = (
            f"`unshare` failed: {r.stderr.decode(errors='replace')[-300:].strip()}"
        )
    return r.returncode == 0


def _probe_bwrap(euid: int) -> bool:
    """Does a kernel's ``bwrap`` command line work here (as the user the kernel would run as)?
    Tries the variants of ``_BWRAP_VARIANTS`` in order and remembers the first that works."""
    work = Path(tempfile.mkdtemp(prefix="olm-probe-"))
    try:
        work.chmod(0o755)
        uid = NOBODY_UID if euid == 0 else None  # as root, bwrap runs as an unprivileged uid
        if uid is not None:
            os.chown(work, uid, NOBODY_GID)
        keep, _ = _kept_paths([])
        hide = _hidden_paths(REPO_ROOT, [str(work.parent)])
        for base in _BWRAP_VARIANTS:
            cmd = _bwrap_command(base, hide, keep, str(work), 16 * 2**20) + [sys.executable, "-c", "pass"]
            try:
                r = subprocess.run(
                    cmd,
                    capture_output=True,
                    timeout=30,
                    env=_scrubbed_env(work, None),
                    cwd=str(work),
                    **_run_as(uid),
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                _PROBE_PROBLEMS["bubblewrap"] = f"`bwrap` failed: {e}"
                return False
            if r.returncode == 0:
                _BWRAP_CHOSEN[:] = [base]
                return True
            _PROBE_PROBLEMS["bubblewrap"] = (
                f"`bwrap` failed: {r.stderr.decode(errors='replace')[-300:].strip()}"
            )
        return False
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_as(uid: int | None) -> dict:
    """``subprocess`` arguments that start a command as ``uid`` (gid the same number, no
    supplementary groups); none for ``None`` (the grader's own user)."""
    return {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}


def _userns_counts_own_processes() -> bool:
    """Linux >= 5.14 counts RLIMIT_NPROC per user namespace (ucounts): a bubblewrap kernel's
    process limit then covers its own processes, not all of the grader's user's."""
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 14)


# ---------------------------------------------------------------------------------------------
# what the kernel sees
def _scrubbed_env(workdir: Path, cache: str | None, tmpdir: str | None = None) -> dict[str, str]:
    """The kernel's whole environment (nothing of the grader's). ``tmpdir``: where temporary
    files go (default: the work folder's ``.tmp``; under bubblewrap the private ``/tmp``)."""
    tmp = tmpdir or str(workdir / ".tmp")
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
        # /tmp is hidden (namespaces) or private (bubblewrap) inside the sandbox: temporary
        # files and torch's compile caches go to a size-capped place of the kernel's own
        "TMPDIR": tmp,
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(tmp, "torchinductor"),
        "XDG_CACHE_HOME": str(workdir / ".cache"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    if cache:
        env["OPEN_LLM_LAB_CACHE"] = cache
    return env


def _inside(path: str, folder: str) -> bool:
    return path != folder and path.startswith(folder.rstrip("/") + "/")


def _hidden_paths(course_root: Path, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Folders replaced by empty tmpfs inside the sandbox: the course, the repository, temporary
    and home folders, and ``extra`` (the folder the work folders are made in, so a kernel never
    sees another's, wherever TMPDIR points)."""
    # the shared temp folders are what the sandbox hides, not what it uses (S108)
    hide = {
        str(course_root),
        str(REPO_ROOT),
        "/tmp",  # noqa: S108
        "/var/tmp",  # noqa: S108
        "/dev/shm",  # noqa: S108
        "/root",
        "/home",
        "/work",
        "/srv",
        "/mnt",
        "/opt/grading",
        "/run/lock",
    }
    hide |= {p for p in extra if p and p != "/"}
    roots = sorted(p for p in hide if os.path.isdir(p))
    # A folder inside another hidden folder is hidden with it (and could not be mounted on).
    return [p for p in roots if not any(_inside(p, q) for q in roots)]


def _kept_paths(extra: list[str]) -> tuple[list[str], str | None]:
    """Folders a kernel must see (read-only): the Python environment (and, where the venv's
    site-packages is a link, the folder it points to), ``course_lib``, the course cache and
    ``extra``; returns them and the cache folder (None when there is none)."""
    import site

    prefix = Path(sys.prefix).resolve()
    keep = [str(prefix), str(COURSE_LIB_DIR)] + list(extra)
    base_prefix = Path(sys.base_prefix).resolve()
    if base_prefix != prefix:
        keep.append(str(base_prefix))
    for sp in site.getsitepackages():
        if os.path.isdir(sp):
            keep.append(os.path.realpath(sp))
    cache = str(cache_root())
    keep_cache = cache if os.path.isdir(cache) else None
    if keep_cache:
        keep.append(keep_cache)
    keep = [k for k in dict.fromkeys(keep) if os.path.isdir(k)]
    # a folder inside another kept folder comes with it
    return [k for k in keep if not any(_inside(k, q) for q in keep)], keep_cache


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


def _bwrap_base() -> list[str]:
    """The bubblewrap options the probe found working (the most restrictive variant)."""
    isolation_level()
    return list(_BWRAP_CHOSEN[0] if _BWRAP_CHOSEN else _BWRAP_VARIANTS[0])


def _bwrap_command(
    base: list[str],
    hide: list[str],
    keep: list[str],
    work: str,
    tmp_bytes: int,
    info_fd: int | None = None,
    block_fd: int | None = None,
) -> list[str]:
    """bubblewrap's command line for one kernel (the command to run follows it): the host file
    system read-only; fresh ``/proc`` and ``/dev``; ``/tmp`` and ``/dev/shm`` empty, writable,
    ``tmp_bytes`` each; every other folder of ``hide`` an empty read-only tmpfs; ``keep``
    mounted back read-only and ``work`` read-write at the same paths. ``info_fd`` receives the
    kernel's host PID; with ``block_fd`` the kernel waits for one byte there before it starts."""
    args = list(base) + ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for path in _BWRAP_SCRATCH:
        args += ["--perms", "1777", "--size", str(int(tmp_bytes)), "--tmpfs", path]
    blank = [
        p
        for p in hide
        if p not in _BWRAP_SCRATCH and not any(_inside(p, s) for s in _BWRAP_SCRATCH + ("/dev", "/proc"))
    ]
    for path in blank:
        args += ["--tmpfs", path]
    for path in keep:
        args += ["--ro-bind", path, path]
    args += ["--bind", work, work]
    for path in blank:  # after the binds: their mount points are made inside these folders
        args += ["--remount-ro", path]
    args += ["--chdir", work]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    if block_fd is not None:
        args += ["--block-fd", str(block_fd)]
    return args + ["--"]


# ---------------------------------------------------------------------------------------------
# per-submission limits: a uid of its own, a cgroup, a size-capped work folder
def _uid_in_use(uid: int) -> bool:
    """Does any process on this machine run as ``uid`` (real, effective, saved or fs uid)?"""
    want = str(uid)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as f:
                status = f.read().decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                if want in line.split()[1:]:
                    return True
                break
    return False


class _UidSlot:
    """A uid that no other running sandbox on this machine uses (root only).

    Slot ``n`` is ``SANDBOX_UID_BASE + n``, held with an exclusive ``flock`` on a lock file in
    a root-only folder for as long as the kernel lives (released when the grader closes it or
    dies), and only taken when no process runs as that uid (a kernel a crashed grader left)."""

    def __init__(self, uid: int, fd: int):
        self.uid, self._fd = uid, fd

    @classmethod
    def acquire(cls) -> "_UidSlot":
        _UID_SLOT_DIR.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(_UID_SLOT_DIR)  # not a link, root's, nobody else's
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
            raise OSError(f"{_UID_SLOT_DIR} must be a folder only root can use")
        start = (os.getpid() * 7919) % SANDBOX_UID_SLOTS  # spread concurrent graders' searches
        for i in range(SANDBOX_UID_SLOTS):
            slot = (start + i) % SANDBOX_UID_SLOTS
            fd = os.open(
                _UID_SLOT_DIR / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if _uid_in_use(SANDBOX_UID_BASE + slot):
                os.close(fd)
                continue
            return cls(SANDBOX_UID_BASE + slot, fd)
        raise OSError(f"all {SANDBOX_UID_SLOTS} sandbox uids are in use")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _tag() -> str:
    """``<pid namespace>-<pid>`` of this process, in the names of the cgroups, work folders and
    spools it makes: what a grader that died (SIGKILL leaves no time to clean up) left behind
    is then recognised, and reaped, by the next grader (:func:`_left_by_dead_grader`)."""
    try:
        ino = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return f"x-{os.getpid()}"  # no /proc (not Linux): never reaped
    digits = ""
    while ino:
        ino, r = divmod(ino, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return f"{digits}-{os.getpid()}"


def _left_by_dead_grader(name: str) -> bool:
    """Was ``name`` (``olm-sbx-<tag>-...`` or ``olm-spool-<tag>-...``) made by a grader of this
    PID namespace that has exited?"""
    m = re.match(r"olm-(?:sbx|spool)-([0-9a-z]+)-(\d+)-", name)
    if not m or m.group(1) != _tag().split("-")[0] or int(m.group(2)) == os.getpid():
        return False
    try:
        os.kill(int(m.group(2)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return False


_REAPED: set[str] = set()


def _reap_stale_cgroups(parent: Path) -> None:
    """Once per process and folder: empty and remove the kernel cgroups in ``parent`` that
    graders which died left behind (killing the kernels still in them)."""
    if str(parent) in _REAPED:
        return
    _REAPED.add(str(parent))
    try:
        stale = [
            Path(e.path)
            for e in os.scandir(parent)
            if e.is_dir(follow_symlinks=False) and _left_by_dead_grader(e.name)
        ]
    except OSError:
        return  # unreadable: nothing of ours there
    for d in stale:
        problem = _Cgroup([d], []).destroy(timeout=5)
        if problem:
            print(f"course_lib.grading.sandbox: stale {problem}", file=sys.stderr)


def _reap_stale_mounts() -> None:
    """As root, once per process: unmount and remove the work folders' and spools' tmpfs that
    graders which died left mounted."""
    if os.geteuid() != 0 or "mounts" in _REAPED:
        return
    _REAPED.add("mounts")
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4].replace("\\040", " ") for line in f if " - tmpfs " in line]
    except OSError:
        return
    for point in sorted(points, reverse=True):  # work folders inside spools first
        if _left_by_dead_grader(os.path.basename(point)):
            problem = _umount(Path(point))
            if problem:
                print(f"course_lib.grading.sandbox: stale {problem}", file=sys.stderr)
            else:
                shutil.rmtree(point, ignore_errors=True)


def _cgroup_mounts() -> list[tuple[str, str, str, set[str]]]:
    """``(fstype, mount point, root inside the hierarchy, controllers)`` of every cgroup file
    system mounted here (controllers of a v1 hierarchy are its mount options)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
                continue
            point = fields[4].replace("\\040", " ")
            out.append((rest[0], point, fields[3], set(rest[2].split(","))))
    return out


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and under ``""`` its v2 path."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3:
                for c in parts[1].split(",") if parts[1] else [""]:
                    own[c.replace("name=", "")] = parts[2]
    return own


def _in_mount(point: str, root: str, path: str) -> Path | None:
    """Where cgroup ``path`` (as /proc/self/cgroup names it) is under a mount of ``root``."""
    root = root.rstrip("/")
    if path != root and not path.startswith(root + "/") and root:
        return None
    return Path(point) / path[len(root) :].lstrip("/")


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class _Cgroup:
    """One kernel's cgroup(s): memory and number of tasks of its whole process tree.

    Made as a child of the grader's own cgroup, so whatever limits the grader's machine or
    container has still apply around it (cgroup v2: or of its parent, where the grader's own
    cgroup cannot have children with controllers). Under cgroup v1 the memory and pids
    controllers live in separate hierarchies: one folder in each. The kernel is moved in before
    it runs any student code and cannot move itself out (the files are root's, or read-only in
    its sandbox); :meth:`destroy` kills whatever is left and removes the folders."""

    def __init__(self, dirs: list[Path], applied: list[str]):
        self.dirs, self.applied = dirs, applied

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    @classmethod
    def create(cls, memory_bytes: int, max_tasks: int) -> tuple["_Cgroup | None", dict[str, str]]:
        """The kernel's cgroup, limited, and ``{limit: why it is missing}``."""
        name = f"olm-sbx-{_tag()}-{secrets.token_hex(4)}"
        missing: dict[str, str] = {}
        try:
            mounts, own = _cgroup_mounts(), _own_cgroups()
        except OSError as e:
            return None, {
                "cgroup-memory": f"cgroups unreadable: {e}",
                "cgroup-pids": f"cgroups unreadable: {e}",
            }
        settings = {"memory": memory_bytes, "pids": max_tasks}
        dirs, applied = [], []
        v2_wanted = []
        for controller in settings:
            v1 = [m for m in mounts if m[0] == "cgroup" and controller in m[3]]
            if not v1:
                v2_wanted.append(controller)
                continue
            _, point, root, _ = v1[0]
            base = _in_mount(point, root, own.get(controller, ""))
            d = cls._make(base / name if base else None, missing, controller, "v1")
            if d is not None and cls._limit(d, controller, settings[controller], "v1", missing):
                dirs.append(d)
                applied.append(f"cgroup-{controller}")
            elif d is not None:
                cls._rmdir(d)
        if v2_wanted:
            d = cls._make_v2(mounts, own.get(""), name, v2_wanted, missing)
            if d is not None:
                ok = [c for c in v2_wanted if cls._limit(d, c, settings[c], "v2", missing)]
                if ok:
                    dirs.append(d)
                    applied += [f"cgroup-{c}" for c in ok]
                else:
                    cls._rmdir(d)
        return (cls(dirs, applied) if dirs else None), missing

    @staticmethod
    def _make(path: Path | None, missing: dict, controller: str, version: str) -> Path | None:
        if path is None:
            missing[f"cgroup-{controller}"] = f"this process's {controller} cgroup is outside the mount"
            return None
        _reap_stale_cgroups(path.parent)
        try:
            path.mkdir()
            return path
        except OSError as e:
            missing[f"cgroup-{controller}"] = (
                f"cannot create a {version} cgroup in {path.parent}: {e.strerror}"
            )
            return None

    @classmethod
    def _make_v2(cls, mounts, own: str | None, name: str, wanted: list[str], missing: dict) -> Path | None:
        """A v2 cgroup with the ``wanted`` controllers: a child of this process's cgroup, or,
        where that cgroup cannot enable controllers for children (it holds processes: cgroup
        v2's no-internal-processes rule), a sibling under its parent."""
        v2 = [m for m in mounts if m[0] == "cgroup2"]
        base = _in_mount(v2[0][1], v2[0][2], own) if v2 and own is not None else None
        if base is None:
            for c in wanted:
                missing[f"cgroup-{c}"] = "no cgroup v2 hierarchy holds this process"
            return None
        parents = [base] if base == Path(v2[0][1]) else [base, base.parent]
        why = ""
        for parent in parents:
            try:
                available = (parent / "cgroup.controllers").read_text().split()
                if not all(c in available for c in wanted):
                    why = f"{parent} lacks the controllers {[c for c in wanted if c not in available]}"
                    continue
                enabled = (parent / "cgroup.subtree_control").read_text().split()
                todo = [c for c in wanted if c not in enabled]
                if todo:
                    _write(parent / "cgroup.subtree_control", " ".join("+" + c for c in todo))
                _reap_stale_cgroups(parent)
                (parent / name).mkdir()
                return parent / name
            except OSError as e:
                why = f"cannot create a v2 cgroup in {parent}: {e.strerror}"
        for c in wanted:
            missing[f"cgroup-{c}"] = why
        return None

    @staticmethod
    def _limit(d: Path, controller: str, value: int, version: str, missing: dict) -> bool:
        """Write ``controller``'s limit into ``d``; False (and why) if it cannot be set."""
        files = {
            ("memory", "v1"): ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
            ("memory", "v2"): ["memory.max", "memory.swap.max"],
            ("pids", "v1"): ["pids.max"],
            ("pids", "v2"): ["pids.max"],
        }[(controller, version)]
        try:
            for i, fname in enumerate(files):
                if i == 0 or (d / fname).exists():  # swap accounting is optional
                    _write(d / fname, str(0 if fname == "memory.swap.max" else value))
            return True
        except OSError as e:
            missing[f"cgroup-{controller}"] = f"cannot set {controller} limits in {d}: {e.strerror}"
            return False

    def add(self, pid: int) -> None:
        """Move process ``pid`` (and its threads) in; raises OSError if that fails."""
        for f in self.procs_files:
            _write(Path(f), str(pid))

    def pids(self) -> set[int]:
        found = set()
        for f in self.procs_files:
            try:
                found |= {int(x) for x in Path(f).read_text().split()}
            except OSError:
                pass  # the folder is gone already
        return found

    def _kill(self, pid: int) -> None:
        """SIGKILL ``pid`` only while it is still in this cgroup (a pidfd pins the process, so a
        recycled PID of another process is never signalled)."""
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            return
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                member = any(line.rstrip("\n").endswith("/" + self.dirs[0].name) for line in f)
            if member:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass  # exited meanwhile
        finally:
            os.close(fd)

    def destroy(self, timeout: float = 15.0) -> str | None:
        """Kill every process left in the cgroup and remove it; a problem, or None."""
        for d in self.dirs:
            if (d / "cgroup.kill").exists():
                try:
                    _write(d / "cgroup.kill", "1")
                except OSError:
                    pass  # older kernels: the loop below kills one by one
        deadline = time.monotonic() + timeout
        left = self.pids()
        while left and time.monotonic() < deadline:
            for pid in left:
                self._kill(pid)
            time.sleep(0.05)
            left = self.pids()
        problems = []
        for d in self.dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if time.monotonic() > deadline:
                        problems.append(
                            f"could not remove cgroup {d}: {e.strerror} (processes {sorted(left)})"
                        )
                        break
                    time.sleep(0.05)
        return "; ".join(problems) or None

    @staticmethod
    def _rmdir(d: Path) -> None:
        try:
            d.rmdir()
        except OSError:
            pass  # a never-used folder that cannot be removed is harmless


def _mount_tmpfs(path: Path, size_mb: int, uid: int) -> None:
    """As root, on the host: an empty tmpfs of ``size_mb`` owned by ``uid`` at ``path`` (the
    kernel's work folder: the grader still sees it, and the kernel's writes stop at ENOSPC)."""
    subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={int(size_mb)}m,mode=0755,uid={uid},gid={uid},nosuid,nodev",
            "tmpfs",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _umount(path: Path) -> str | None:
    """Unmount ``path`` (lazily if it is still busy); a problem, or None."""
    r = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
    if r.returncode != 0:
        r = subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
    if r.returncode != 0:
        return f"could not unmount {path}: {r.stderr.decode(errors='replace').strip()[:200]}"
    return None


# ---------------------------------------------------------------------------------------------
# the kernel's side of the start
@dataclass
class _ProcessLimits:
    """What a kernel applies to itself before it runs ipykernel (as JSON in its boot file)."""

    memory_bytes: int
    cpu_seconds: int
    max_processes: int  # RLIMIT_NPROC (0: not set)
    file_bytes: int  # RLIMIT_FSIZE
    uid: int  # the user it becomes (when it starts as root)
    cgroup_procs: list[str] = field(default_factory=list)  # cgroup.procs files to enter


@dataclass
class _BootConfig:
    workdir: str
    connection_file: str
    hide: list[str]
    keep: list[str]  # mounted back read-only at the same path
    env: dict[str, str]
    limits: dict
    mode: str  # "namespaces", "bubblewrap" or "none"
    python: str = field(default_factory=lambda: sys.executable)


def _enter_cgroups(procs_files: list[str]) -> None:
    """Move this process into its kernel's cgroups, before it drops root: writing 0 to a
    ``cgroup.procs`` file moves the writer. Failing raises: a kernel never runs outside the
    cgroup the grader reported."""
    for path in procs_files:
        _write(Path(path), "0")


def _lower_limit(which: int, value: int) -> None:
    """Set soft and hard limit to ``value``, or to the current hard limit if that is lower."""
    _, hard = resource.getrlimit(which)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (value, value))


def _limit_and_drop(lim: dict, workdir: str, drop: bool) -> None:
    """Resource limits, the work folder as cwd, and (when ``drop``: started as root) the
    kernel's own unprivileged uid and gid, with no supplementary groups."""
    _lower_limit(resource.RLIMIT_AS, lim["memory_bytes"])
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    cpu = lim["cpu_seconds"]
    resource.setrlimit(
        resource.RLIMIT_CPU,
        (cpu, cpu + 5) if hard == resource.RLIM_INFINITY or hard >= cpu + 5 else (min(cpu, hard), hard),
    )
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if lim["max_processes"]:
        _lower_limit(resource.RLIMIT_NPROC, lim["max_processes"])
    if lim["file_bytes"]:
        _lower_limit(resource.RLIMIT_FSIZE, lim["file_bytes"])
    os.chdir(workdir)
    if drop:
        os.setgroups([])
        os.setgid(lim["uid"])
        os.setuid(lim["uid"])


def _boot(config_path: str) -> None:  # pragma: no cover - runs inside the sandbox
    """Entry point inside the namespaces: hide, enter the cgroup, drop privileges, limit, exec
    the kernel."""
    cfg = _BootConfig(**json.loads(Path(config_path).read_text()))
    if cfg.mode == "namespaces":
        _mount_hidden(cfg.hide, cfg.keep, [cfg.workdir])
        _enter_cgroups(cfg.limits["cgroup_procs"])
    _limit_and_drop(cfg.limits, cfg.workdir, drop=cfg.mode == "namespaces")
    os.execve(  # noqa: S606 - argument list, no shell, fixed program
        cfg.python,
        [
            cfg.python,
            "-m",
            "ipykernel_launcher",
            "-f",
            cfg.connection_file,
            "--HistoryManager.enabled=False",
        ],
        cfg.env,
    )


# ---------------------------------------------------------------------------------------------
# the trusted side's handle on a kernel process
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


class _BwrapProcess(_PopenProcess):
    """A kernel under ``bwrap``: ``proc`` is bwrap itself, ``child_pid`` the kernel (PID 1 of
    its namespace, leader of its own session and process group)."""

    def __init__(self, proc: subprocess.Popen, child_pid: int):
        super().__init__(proc)
        self.child_pid = child_pid

    def signal_group(self, sig: int) -> None:
        """Signal the kernel's process group. (bwrap's own group would not do: bwrap dies of
        SIGINT and takes the kernel with it.)"""
        if self.proc.poll() is not None:
            return  # the kernel is gone (bwrap exits with it): its group id may be reused
        try:
            os.killpg(self.child_pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGKILL)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # and bwrap (--die-with-parent: the rest)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)


def _read_bwrap_info(fd: int, timeout: float) -> dict:
    """The JSON bwrap writes to ``--info-fd`` once the sandbox exists (``{"child-pid": ...}``)."""
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            buf += chunk
            try:
                info = json.loads(buf)
                if isinstance(info, dict) and isinstance(info.get("child-pid"), int):
                    return info
            except ValueError:
                pass  # not complete yet
            if not chunk:
                break
    finally:
        os.close(fd)
    raise KernelDied(f"bwrap did not start the sandbox (it said {buf[:200]!r})")


# ---------------------------------------------------------------------------------------------
# the kernel
def _choose_mode(isolate: bool | None) -> str | None:
    """The isolation a cold kernel gets: ``isolate=None`` the best available, ``False`` none,
    ``True`` the best available or (where there is none) namespaces, which then fail loudly."""
    if isolate is False:
        return None
    level = isolation_level()
    if level != "limits-only":
        return level
    return "namespaces" if isolate else None


_BOOT_CODE = "import sys; from course_lib.grading.sandbox import _boot; _boot(sys.argv[1])"


class SandboxKernel:
    """An ipykernel in a sandbox, driven with a jupyter_client blocking client.

    Started by ``unshare`` + exec, by ``bwrap`` + exec, or (faster, with ``zygote``) forked from
    a warm :class:`~.zygote.Zygote`; the isolation is the same. After :meth:`start`,
    ``limits_applied`` lists the per-submission limits in force (``uid-per-kernel``,
    ``nproc-per-userns``, ``cgroup-memory``, ``cgroup-pids``, ``tmpfs-workdir``, ``tmpfs-tmp``,
    ``rlimit-as``, ``rlimit-cpu``, ``rlimit-nproc``, ``rlimit-fsize``) and
    ``limits_unavailable`` says why each missing one is missing. Kernels must be started from
    a thread that outlives them (bubblewrap kills a kernel whose starting thread exits).

    >>> with SandboxKernel(course_root=Path(".")) as k:            # doctest: +SKIP
    ...     k.execute("x = 1 + 1")
    """

    def __init__(
        self,
        course_root: Path,
        limits: SandboxLimits | None = None,
        keep: list[str] | None = None,
        isolate: bool | None = None,
        zygote=None,
    ):
        self.limits = limits or SandboxLimits()
        self.course_root = Path(course_root).resolve()
        self.zygote = zygote
        if zygote is not None:
            if not zygote.alive():
                raise KernelDied("the sandbox zygote is not running (start() it, or pass zygote=None)")
            self.mode = zygote.mode
        else:
            self.mode = _choose_mode(isolate)
        self.isolate = self.mode is not None
        self.workdir = Path(
            tempfile.mkdtemp(prefix=f"olm-sbx-{_tag()}-", dir=zygote.spool if zygote else None)
        )
        self.workdir.chmod(0o755)
        self._keep = list(keep or [])
        self.proc: _PopenProcess | _BwrapProcess | None = None
        self.client = None
        self.uid: int | None = None  # the kernel's own uid when it is not the grader's
        self.limits_applied: list[str] = []
        self.limits_unavailable: dict[str, str] = {}
        self.cleanup_problems: list[str] = []
        self._slot: _UidSlot | None = None
        self._cgroup: _Cgroup | None = None
        self._tmpfs = False

    # -- limits ------------------------------------------------------------------------------
    def _apply_limits(self) -> None:
        """Take this kernel's uid, cgroup and private space before it starts; record what it
        got in ``limits_applied`` and what it could not get in ``limits_unavailable``."""
        applied, missing, lim = self.limits_applied, self.limits_unavailable, self.limits
        root = os.geteuid() == 0
        _reap_stale_mounts()
        if self.mode is not None and root:
            try:
                self._slot = _UidSlot.acquire()
                self.uid = self._slot.uid
                applied.append("uid-per-kernel")
            except OSError as e:
                self.uid = NOBODY_UID
                missing["uid-per-kernel"] = f"no free sandbox uid ({e}): the kernel runs as nobody"
        elif self.mode == "bubblewrap":
            missing["uid-per-kernel"] = "bubblewrap without root: the kernel keeps the grader's uid"
            if _userns_counts_own_processes():
                applied.append("nproc-per-userns")
            else:
                missing["nproc-per-userns"] = (
                    "Linux < 5.14 counts every process of the grader's user: no process limit is set"
                )
        else:
            missing["uid-per-kernel"] = "no OS isolation: the kernel runs as the grader's user"
        if self.mode is not None:
            self._cgroup, why = _Cgroup.create(int(lim.memory_gb * 2**30), lim.max_processes)
            missing.update(why)
            applied += self._cgroup.applied if self._cgroup else []
        else:
            missing["cgroup-memory"] = missing["cgroup-pids"] = "no OS isolation"
        self._limit_space()
        applied += ["rlimit-as", "rlimit-cpu", "rlimit-fsize"]
        if self._process_limits()["max_processes"]:
            applied.append("rlimit-nproc")

    def _limit_space(self) -> None:
        """A size-capped private writable space: a tmpfs as the work folder (root), the
        zygote's spool tmpfs, or private /tmp and /dev/shm tmpfs (bubblewrap)."""
        applied, missing, tmp_mb = self.limits_applied, self.limits_unavailable, self.limits.tmp_mb
        if self.mode is None:
            missing["tmpfs-workdir"] = "no OS isolation"
        elif self.zygote is not None:
            problem = self.zygote.size_spool(tmp_mb)
            if problem:
                missing["tmpfs-workdir"] = problem
            else:
                applied.append("tmpfs-workdir")  # the spool, shared by this zygote's kernels in turn
        elif os.geteuid() == 0:
            try:
                _mount_tmpfs(self.workdir, tmp_mb, self.uid if self.uid is not None else NOBODY_UID)
                self._tmpfs = True
                applied.append("tmpfs-workdir")
            except (OSError, subprocess.SubprocessError) as e:
                detail = getattr(e, "stderr", b"") or b""
                missing["tmpfs-workdir"] = (
                    f"cannot mount a tmpfs: {e} {detail.decode(errors='replace')[:200]}"
                )
        else:
            missing["tmpfs-workdir"] = (
                "bubblewrap without root cannot mount on the host: the work "
                "folder is capped per file (RLIMIT_FSIZE), not in total"
            )
        if self.mode == "bubblewrap":
            applied.append("tmpfs-tmp")

    def _process_limits(self) -> dict:
        """The limits the kernel applies to itself (see :func:`_limit_and_drop`)."""
        nproc = self.limits.max_processes
        if self.mode == "bubblewrap" and not {"nproc-per-userns", "uid-per-kernel"} & set(
            self.limits_applied
        ):
            nproc = 0  # it would count the grader's own processes
        cg = self._cgroup.procs_files if self._cgroup is not None and self.mode == "namespaces" else []
        return asdict(
            _ProcessLimits(
                memory_bytes=int(self.limits.memory_gb * 2**30),
                cpu_seconds=int(self.limits.cpu_seconds),
                max_processes=nproc,
                file_bytes=int(self.limits.tmp_mb) * 2**20,
                uid=self.uid if self.uid is not None else NOBODY_UID,
                cgroup_procs=cg,
            )
        )

    def _release_limits(self) -> None:
        """Empty and remove the cgroup, unmount the work folder's tmpfs, give the uid back."""
        if self._cgroup is not None:
            problem = self._cgroup.destroy()
            if problem:
                self.cleanup_problems.append(problem)
            self._cgroup = None
        if self._tmpfs:
            problem = _umount(self.workdir)
            if problem:
                self.cleanup_problems.append(problem)
            self._tmpfs = False
        if self._slot is not None:
            self._slot.release()
            self._slot = None

    # -- life cycle -------------------------------------------------------------------------
    def start(self, ready_timeout: float = 120.0) -> "SandboxKernel":
        """Start the kernel and wait until it answers; on any failure everything it took (uid,
        cgroup, mounts, processes) is released before the error propagates."""
        try:
            return self._start(ready_timeout)
        except BaseException:
            self.stop()  # the error message carries the end of kernel.log
            raise

    def _start(self, ready_timeout: float) -> "SandboxKernel":
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        self._apply_limits()
        conn = self.workdir / "kernel.json"
        write_connection_file(str(conn), transport="ipc", ip=str(self.workdir / "ipc"))
        for sub in (".runtime", ".ipython", ".mpl", ".tmp", ".cache"):
            (self.workdir / sub).mkdir(exist_ok=True)
        if self.uid is not None:
            os.chown(self.workdir, self.uid, self.uid)
            for p in self.workdir.rglob("*"):
                os.chown(p, self.uid, self.uid, follow_symlinks=False)
        if self.zygote is not None:
            self._spawn_in_zygote(conn)
        elif self.mode == "bubblewrap":
            self._start_bwrap(conn)
        else:
            self._start_unshare(conn)
        client = BlockingKernelClient()
        deadline = time.time() + ready_timeout
        client.load_connection_file(str(conn))
        client.start_channels()
        self.client = client
        while True:
            if self.proc.poll() is not None:
                raise KernelDied(f"the sandbox kernel exited while starting: {self.log_tail()}")
            try:
                client.wait_for_ready(timeout=2)
                break
            except RuntimeError:
                if time.time() > deadline:
                    raise KernelDied(
                        f"the sandbox kernel did not start in {ready_timeout} s: {self.log_tail()}"
                    ) from None
        return self

    def _kernel_env(self, cache: str | None) -> dict[str, str]:
        env = _scrubbed_env(self.workdir, cache, tmpdir="/tmp" if self.mode == "bubblewrap" else None)  # noqa: S108 - private tmpfs
        env["PYTHONPATH"] = str(REPO_ROOT)  # course_lib importable even if installed editable
        return env

    def _write_boot(self, conn: Path, hide: list[str], keep: list[str], cache: str | None) -> Path:
        cfg = _BootConfig(
            workdir=str(self.workdir),
            connection_file=str(conn),
            hide=hide,
            keep=keep,
            env=self._kernel_env(cache),
            limits=self._process_limits(),
            mode=self.mode or "none",
        )
        boot_path = self.workdir / "boot.json"
        boot_path.write_text(json.dumps(asdict(cfg)))
        return boot_path

    def _spawn_in_zygote(self, conn: Path) -> None:
        from .zygote import _ZygoteProcess

        boot = {
            "workdir": str(self.workdir),
            "connection_file": str(conn),
            "env": self._kernel_env(self.zygote.cache),
            "spool": str(self.zygote.spool),
            "isolate": self.isolate,
            "limits": self._process_limits(),
        }
        pid = self.zygote.request({"op": "spawn", "boot": boot})["pid"]
        self.proc = _ZygoteProcess(self.zygote, pid)

    def _start_unshare(self, conn: Path) -> None:
        """Cold start as root (``unshare`` + the boot code) or, without isolation, plainly."""
        keep, cache = _kept_paths(self._keep)
        hide = _hidden_paths(self.course_root, [str(self.workdir.parent)]) if self.isolate else []
        boot_path = self._write_boot(conn, hide, keep, cache)
        cmd = [sys.executable, "-c", _BOOT_CODE, str(boot_path)]
        if self.mode == "namespaces":
            cmd = _UNSHARE + cmd
        with open(self.workdir / "kernel.log", "wb") as log:
            self.proc = _PopenProcess(
                subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                    cwd=str(self.workdir),
                    env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                )
            )

    def _start_bwrap(self, conn: Path) -> None:
        """Cold start under ``bwrap``. bwrap reports the kernel's host PID on the info pipe and
        holds the kernel on the block pipe until the grader has moved it into its cgroup, so
        not one instruction of the kernel runs outside it."""
        keep, cache = _kept_paths(self._keep)
        boot_path = self._write_boot(conn, [], [], cache)
        hide = _hidden_paths(self.course_root, [str(self.workdir.parent)])
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        try:
            cmd = _bwrap_command(
                _bwrap_base(),
                hide,
                keep,
                str(self.workdir),
                int(self.limits.tmp_mb) * 2**20,
                info_fd=info_w,
                block_fd=block_r,
            )
            cmd += [sys.executable, "-c", _BOOT_CODE, str(boot_path)]
            with open(self.workdir / "kernel.log", "wb") as log:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                    cwd=str(self.workdir),
                    env=self._kernel_env(cache),
                    pass_fds=(info_w, block_r),
                    **_run_as(self.uid),
                )
            self.proc = _PopenProcess(proc)  # until the kernel's own PID is known
            os.close(info_w)
            info_w = -1
            try:
                child = _read_bwrap_info(info_r, timeout=30)["child-pid"]
            except KernelDied as e:
                time.sleep(0.2)
                raise KernelDied(f"{e}: {self.log_tail()}") from None
            finally:
                info_r = -1  # closed by _read_bwrap_info
            self.proc = _BwrapProcess(proc, child)
            if self._cgroup is not None:
                try:
                    self._cgroup.add(child)
                except OSError as e:
                    proc.wait(timeout=5) if e.errno == errno.ESRCH else None  # bwrap failed: why
                    raise KernelDied(
                        f"could not move the kernel into its cgroup ({e.strerror}): {self.log_tail()}"
                    ) from None
            os.write(block_w, b"g")
        finally:
            for fd in (info_r, info_w, block_r, block_w):
                if fd >= 0:
                    os.close(fd)

    def log_tail(self, n: int = 1500) -> str:
        return read_text_tail(self.workdir / "kernel.log", MAX_LOG_BYTES)[-n:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, remove_workdir: bool = True) -> None:
        """Kill the kernel and everything it started, release its limits, remove its folder.
        Safe to call more than once."""
        if self.client is not None:
            with contextlib.suppress(Exception):  # a dead kernel's channels may already be closed
                self.client.stop_channels()
            self.client = None
        self.stop_process()
        self._release_limits()
        if remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- execution ---------------------------------------------------------------------------
    def execute(
        self, code: str, timeout: float | None = None, max_output_chars: int = MAX_CELL_OUTPUT_CHARS
    ) -> dict:
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
                outputs.append(
                    {
                        "output_type": "stream",
                        "name": "stdout",
                        "text": f"\n... (output truncated at {max_output_chars:,} characters)\n",
                    }
                )

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                text = str(content.get("text", ""))
                part = text[: max(0, budget[0])]
                if part:
                    keep(
                        {
                            "output_type": "stream",
                            "text": part,
                            "name": "stderr" if content.get("name") == "stderr" else "stdout",
                        },
                        len(part),
                    )
                if len(part) < len(text):
                    keep({}, budget[0] + 1)  # over the budget: only the truncation notice
            elif kind in ("execute_result", "display_data"):
                data = {
                    k: str(v)
                    for k, v in dict(content.get("data", {})).items()
                    if k in ("text/plain", "image/png", "text/html")
                }
                out = {"output_type": kind, "data": data, "metadata": {}}
                if kind == "execute_result":
                    out["execution_count"] = content.get("execution_count")
                keep(out, sum(len(v) for v in data.values()))
            elif kind == "error":
                tb = [str(t)[:2000] for t in list(content.get("traceback", []))[-20:]]
                out = {
                    "output_type": "error",
                    "ename": str(content.get("ename"))[:200],
                    "evalue": str(content.get("evalue"))[:2000],
                    "traceback": tb,
                }
                size = len(out["ename"]) + len(out["evalue"]) + sum(len(t) for t in tb)
                if size > budget[0]:  # an error always shows, without its traceback if need be
                    out["traceback"] = []
                    size = len(out["ename"]) + len(out["evalue"])
                    budget[0] = max(budget[0], size)
                keep(out, size)

        # stop_on_error=False: after an error (an interrupted loop among them) ipykernel would
        # otherwise abort requests that arrive while it is still unwinding, so the next cell
        # could come back "aborted" on a busy machine instead of running.
        msg_id = self.client.execute(code, store_history=False, allow_stdin=False, stop_on_error=False)
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
        return {
            "status": content.get("status"),
            "outputs": outputs,
            "ename": content.get("ename"),
            "evalue": content.get("evalue"),
        }

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
                            return {
                                "status": "error",
                                "outputs": outputs,
                                "ename": "TimeoutError",
                                "evalue": f"interrupted after {timeout:.0f} s (an infinite loop?)",
                            }
                    except Exception:  # noqa: BLE001, S110 - the kernel may be gone; the timeout is reported
                        pass
            except ProcessLookupError:
                pass
        self.stop_process()
        raise KernelDied(f"timed out after {timeout:.0f} s and did not stop when interrupted")

    def stop_process(self) -> None:
        """Kill the kernel's whole process tree (its namespaces, the kernel and its children)."""
        if self.proc is not None:
            self.proc.kill()
