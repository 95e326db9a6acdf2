"""Every file the trusted side opens in a place a student can write, opened one way.

Submission folders, a sandbox's work folder and the exchange are student-writable. There the
grader (often root) never follows a symbolic link, never blocks on a FIFO or device, reads only
regular files and at most a capped number of bytes, and creates files only if they do not exist
yet. Paths are walked one component at a time from a trusted folder with ``O_NOFOLLOW``, so a
link anywhere on the way (the student's folder itself, the lab folder, the notebook) is refused.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> fd = open_dir(d)
    >>> write_new(fd, "a.txt", b"hi")
    >>> read_regular(fd, "a.txt", max_bytes=10)
    b'hi'
    >>> os.symlink("/etc/passwd", os.path.join(d, "link"))
    >>> read_regular(fd, "link", max_bytes=10)
    Traceback (most recent call last):
    ...
    course_lib.grading.files.UnsafeFile: link is a symbolic link (refused: links are never followed)
    >>> os.close(fd)
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["UnsafeFile", "open_dir", "read_regular", "write_new", "read_path", "read_text_tail"]


class UnsafeFile(OSError):
    """A path in a student-writable place that is not what the grader may read or write."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def _refusal(name: str, dir_fd: int | None, err: OSError) -> UnsafeFile:
    try:
        st = os.lstat(name, dir_fd=dir_fd)
        if stat.S_ISLNK(st.st_mode):
            return UnsafeFile(f"{name} is a symbolic link (refused: links are never followed)")
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            return UnsafeFile(f"{name} is not a regular file")
    except OSError:
        pass
    return UnsafeFile(f"{name}: {err.strerror}")


def open_dir(path: str | os.PathLike, dir_fd: int | None = None) -> int:
    """A descriptor of folder ``path`` (not a link); close it with ``os.close``."""
    try:
        return os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        raise _refusal(str(path), dir_fd, e) from None


def read_regular(dir_fd: int | None, name: str, max_bytes: int) -> bytes:
    """The bytes of regular file ``name`` in ``dir_fd``; refuses links, FIFOs, devices and
    files over ``max_bytes``."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO):
            raise _refusal(name, dir_fd, e) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{name} is not a regular file")
        if st.st_size > max_bytes:
            raise UnsafeFile(
                f"{name} is {st.st_size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit"
            )
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise UnsafeFile(f"{name} grew past the {max_bytes / 2**20:.0f} MB limit while read")
        return data
    finally:
        os.close(fd)


def write_new(dir_fd: int | None, name: str, data: bytes, mode: int = 0o644) -> None:
    """Create ``name`` in ``dir_fd`` with ``data``; refuses if anything (a link...) is there."""
    try:
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
            mode,
            dir_fd=dir_fd,
        )
    except FileExistsError:
        raise UnsafeFile(f"{name} already exists (something was planted where the grader writes)") from None
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read_path(root: str | os.PathLike, rel: str | os.PathLike, max_bytes: int) -> bytes:
    """Read ``root/rel`` walking each component of ``rel`` without following links.

    ``root`` itself is trusted (the instructor chose it); every folder and the file below it
    must be real folders and a regular file.
    """
    parts = Path(rel).parts
    if not parts or any(p in ("", ".", "..") or "/" in p for p in parts) or Path(rel).is_absolute():
        raise UnsafeFile(f"{rel}: not a plain relative path")
    fd = open_dir(root)
    try:
        for part in parts[:-1]:
            nxt = open_dir(part, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return read_regular(fd, parts[-1], max_bytes)
    finally:
        os.close(fd)


def read_text_tail(path: str | os.PathLike, max_bytes: int) -> str:
    """The last ``max_bytes`` of a log file a sandbox could have replaced ("" if unreadable)."""
    p = Path(path)
    try:
        fd = open_dir(p.parent)
    except OSError:
        return ""
    try:
        f = os.open(p.name, _READ_FLAGS, dir_fd=fd)
    except OSError:
        return ""
    finally:
        os.close(fd)
    try:
        st = os.fstat(f)
        if not stat.S_ISREG(st.st_mode):
            return ""
        os.lseek(f, max(0, st.st_size - max_bytes), os.SEEK_SET)
        return os.read(f, max_bytes).decode("utf-8", errors="replace")
    except OSError:
        return ""
    finally:
        os.close(f)
