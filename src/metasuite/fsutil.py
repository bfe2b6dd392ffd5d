"""Atomic file writes: a crash mid-write leaves the previous file intact.

Write to a temporary file in the same folder, fsync it, ``os.replace`` it over the
target, then fsync the folder so the rename itself survives a power cut.

A location the user pointed at that cannot be written (a read-only mount, a folder
without write permission) is the user's to fix: :func:`writable` turns it into one
:class:`NotWritableError` line naming the folder, for every write made through here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from metasuite.errors import UserError

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
    with writable(path.parent):
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
    except BaseException:
        tmp.unlink(missing_ok=True)
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
