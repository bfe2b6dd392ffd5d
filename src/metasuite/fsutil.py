"""Atomic file writes: a crash mid-write leaves the previous file intact.

A full disk (ENOSPC, EDQUOT) during any atomic write is one mechanism for every file
(checkpoints, state, summaries, configs): the temporary file is removed, the previous
file stays, and :class:`~metasuite.errors.DiskFullError` says "no space left on DEVICE
writing FILE" (exit status 1, no traceback).

Write to a temporary file in the same folder, fsync it, ``os.replace`` it over the
target, then fsync the folder so the rename itself survives a power cut.

A location the user pointed at that cannot be written (a read-only mount, a folder
without write permission, a file where a folder should be) is the user's to fix.

:func:`write_fault` is the one classification of what goes wrong while writing, used by
every write path (the atomic writes here, :func:`writing` around writes made elsewhere,
and the command line's last resort): it looks through the exception and what caused it
(``torch.save`` on a full disk raises a ``RuntimeError`` whose context is the
``OSError``) and returns one line: disk full (:class:`DiskFullError`, exit 1), not
writable or a file in the way (:class:`NotWritableError`, exit 2), another I/O fault of
the machine (:class:`~metasuite.errors.EnvironmentFault`, exit 1); or None for a bug,
which keeps its traceback.
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

from metasuite.errors import DiskFullError, EnvironmentFault, UserError

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


NOT_A_FOLDER_ERRNOS = frozenset({errno.ENOTDIR, errno.EEXIST})
"""A file stands where a folder is wanted (``mkdir -p`` over a file, a path through one)."""

MACHINE_FAULT_ERRNOS = frozenset({errno.EIO, errno.ENXIO, errno.ESTALE, errno.ENODEV})
"""The storage itself failed (an I/O error, a vanished NFS handle): the machine's fault."""


def _os_error_in(exc: BaseException) -> OSError | None:
    """``exc`` or the first ``OSError`` among its causes (``raise ... from``, or the
    exception being handled when it was raised, as torch's writers do)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return None


def _no_space_at(path: Path) -> bool:
    """Whether the file system holding ``path`` has no block left for this user."""
    try:
        stats = os.statvfs(_existing_ancestor(path))
    except OSError:
        return False
    return stats.f_bavail == 0


def _file_in_the_way(path: Path) -> Path:
    """The first component of ``path`` that exists and is not a folder (else ``path``)."""
    path = Path(os.path.abspath(path))
    for part in [*reversed(path.parents), path]:
        if part.exists() and not part.is_dir():
            return part
    return path


def write_fault(exc: BaseException, path: Path) -> UserError | None:
    """The one-line error for ``exc``, raised while writing ``path`` (a file, or the
    folder being written into), or None when it is not the environment's doing (a bug:
    let it raise). An error that is already a :class:`UserError` is left as it is."""
    if isinstance(exc, UserError):
        return None
    error = _os_error_in(exc)
    if error is None:
        # torch's zip writer reports a short write as a RuntimeError ("unexpected pos")
        # without the OSError when its own buffer, not Python's, hit the full disk.
        if isinstance(exc, RuntimeError) and _no_space_at(path):
            return disk_full(path)
        return None
    target = Path(error.filename) if isinstance(error.filename, str) else Path(path)
    reason = error.strerror or str(error)
    if error.errno in DISK_FULL_ERRNOS:
        return disk_full(path)
    if error.errno in NOT_WRITABLE_ERRNOS:
        where = _existing_ancestor(target)
        return NotWritableError(f"{where}: cannot write here ({reason}); choose a writable folder")
    if error.errno in NOT_A_FOLDER_ERRNOS:
        blocker = _file_in_the_way(target)
        if blocker.exists() and not blocker.is_dir():
            return NotWritableError(
                f"{blocker}: is a file, not a folder; name a folder (or a path that does not "
                "exist yet)"
            )
        return None
    if error.errno in MACHINE_FAULT_ERRNOS:
        return EnvironmentFault(f"cannot write {path}: {reason}; check the storage and rerun")
    return None


def environment_fault(exc: BaseException) -> UserError | None:
    """:func:`write_fault` where the path is unknown: the file named by the ``OSError``
    behind ``exc`` (None when there is none, or it is not the environment's fault)."""
    error = _os_error_in(exc)
    if error is None or not isinstance(error.filename, str):
        return None
    return write_fault(exc, Path(error.filename))


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Writes to ``path`` (or into the folder ``path``) inside this block that fail for
    the environment's reasons become :func:`write_fault`'s one line; bugs pass unchanged."""
    try:
        yield
    except Exception as exc:
        fault = write_fault(exc, path)
        if fault is None:
            raise
        raise fault from None


writable = writing
"""The older name of :func:`writing`."""


def make_dirs(folder: Path) -> None:
    """``mkdir -p`` that names the folder when the location is read-only or a file is
    in the way."""
    with writing(folder):
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
    make_dirs(path.parent)
    with writing(path):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
        # The previous file is untouched; a fault of the environment is one line.
        fault = write_fault(exc, path) if isinstance(exc, Exception) else None
        if fault is not None:
            raise fault from None
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
