"""Atomic file writes: a crash mid-write leaves the previous file intact.

A full disk (ENOSPC, EDQUOT) during any atomic write is one mechanism for every file
(checkpoints, state, summaries, configs): the temporary file is removed, the previous
file stays, and :class:`~metasuite.errors.DiskFullError` says "no space left on DEVICE
writing FILE" (exit status 1, no traceback).

Write to a temporary file in the same folder, fsync it, ``os.replace`` it over the
target, then fsync the folder so the rename itself survives a power cut.

A location the user pointed at that cannot be written (a read-only mount, a folder
without write permission) is the user's to fix: :func:`writable` turns it into one
:class:`NotWritableError` line naming the folder, for every write made through here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from metasuite.errors import DiskFullError, UserError

NOT_WRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
"""A location that refuses writes: read-only file system, permission denied."""


class NotWritableError(UserError):
    """A folder the user named (or its parent) cannot be written to."""


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent: the folder that refused the write."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


@contextlib.contextmanager
def writable(folder: Path) -> Iterator[None]:
    """Writes into ``folder`` inside this block that the location refuses become one
    :class:`NotWritableError` naming the folder (other OS errors pass unchanged)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NOT_WRITABLE_ERRNOS:
            raise
        where = _existing_ancestor(folder)
        raise NotWritableError(
            f"{where}: cannot write here ({exc.strerror or exc}); choose a writable folder"
        ) from None


def make_dirs(folder: Path) -> None:
    """``mkdir -p`` that names the folder when the location is read-only."""
    with writable(folder):
        Path(folder).mkdir(parents=True, exist_ok=True)


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""``OSError`` numbers that mean the file system (or the user's quota) is full."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def _mount_of(path: Path) -> tuple[Path, str | None]:
    """The mount point holding ``path`` and its device (from /proc/mounts, if any)."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    device = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[1] == str(folder):
                device = fields[0]  # the last match is the mount on top
    return folder, device


def disk_full(path: Path) -> DiskFullError:
    """The one-line error for a write to ``path`` that ran out of space: "no space left
    on DEVICE writing FILE", the device named by its mount point (and source)."""
    mount, device = _mount_of(Path(path))
    where = f"{mount} ({device})" if device and device != str(mount) else str(mount)
    return DiskFullError(f"no space left on {where} writing {path}; free some space and rerun")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    """The process umask (reading it means setting it; restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only when the block ends cleanly."""
    path = Path(path)
    try:
        make_dirs(path.parent)
        with writable(path.parent):
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(path) from None
        raise
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600 files; give the result the mode a plain open() would, so
        # configs and results stay readable by the rest of a shared cluster.
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            # The previous file is untouched; say so in one line instead of Errno 28.
            raise disk_full(path) from None
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_open(path) as handle:
        handle.write(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_with_atomic(path: Path, writer: Callable[[BinaryIO], None]) -> None:
    """Atomically write whatever ``writer(handle)`` writes (e.g. ``torch.save``)."""
    with atomic_open(path) as handle:
        writer(handle)


_NO_FLOCK_HERE = frozenset({errno.EBADF, errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP})


@contextlib.contextmanager
def flocked(target: Path, fallback: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` for the block on ``target``, a folder or file that
    exists anyway, opened read-only: no lock file is left behind. Where the file system
    refuses that (NFS emulates flock with POSIX locks, which need a writable file), on
    ``fallback`` instead, created if needed and left in place: deleting a lock file that
    another process may be waiting on would let a third one in beside it."""
    fd = os.open(target, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in _NO_FLOCK_HERE:
            raise
        fd = os.open(fallback, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
