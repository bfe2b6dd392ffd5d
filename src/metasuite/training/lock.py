"""One process per experiment folder: a lock file that names its owner.

Two processes training the same experiment would overwrite each other's checkpoints
and statistics. The lock file holds the owner's pid, host and process start time;
a lock whose owner is gone (killed with SIGKILL, machine rebooted) is taken over with a
message, because a cluster job killed at its time limit cannot clean up after itself.

Creating and taking over the lock happens under an ``flock`` on the experiment folder
itself (a guard file only where the file system cannot flock a folder, see
:func:`metasuite.fsutil.flocked`), so two processes that find the same stale lock
cannot both take it over. The lock file itself
is created complete (written to a temporary name, then hard-linked into place), so a
reader never sees it half written.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metasuite import jsontext
from metasuite.errors import UserError
from metasuite.fsutil import flocked

LOCK_NAME = "lock"
GUARD_NAME = ".lock.guard"
"""Only on file systems that cannot flock the folder itself (NFS)."""


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against a recycled pid), if known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22, counted after the parenthesised command name (which may hold spaces).
    return stat.rpartition(")")[2].split()[19]


def pid_alive(pid: Any, start_time: str | None = None) -> bool:
    """Whether ``pid`` is a live process that could be ours (not a zombie, not reused).

    The one liveness check behind the lock, ``metasuite status`` and ``run-suite``: a
    file naming a pid (lock, ``state.json``) outlives a killed process, and the OS
    recycles pid numbers. So a zombie is dead; a process whose kernel start time differs
    from ``start_time`` (when recorded) is another process; and a live process whose
    command line mentions neither python nor metasuite is taken to be somebody else's.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    if start_time is not None:
        current = process_start_time(pid)
        if current is not None and current != start_time:
            return False  # the pid was reused by another process
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").lower()
    except (OSError, IndexError):
        return True  # no /proc (macOS) or it vanished meanwhile: trust os.kill
    return not cmdline or b"python" in cmdline or b"metasuite" in cmdline


class ExperimentLock:
    """``<folder>/lock``, held while a process works on the experiment."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False
        self.took_over: dict[str, Any] | None = None

    def owner(self) -> dict[str, Any] | None:
        """The lock file's record of its holder (pid, host, start time, since); None when
        there is no lock, {} when it cannot be read."""
        try:
            return jsontext.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        """Take the lock or raise :class:`UserError` naming the process that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_time": process_start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with flocked(self.folder, self.folder / GUARD_NAME):
            owner = self.owner()
            if owner is not None:
                self._refuse_or_take_over(owner)
            tmp = self.folder / f".lock.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(me) + "\n")
            try:
                os.link(tmp, self.path)  # fails if the file exists: exclusive create
            finally:
                tmp.unlink(missing_ok=True)
        self.held = True

    def _refuse_or_take_over(self, owner: dict[str, Any]) -> None:
        pid, host = owner.get("pid"), owner.get("host")
        if isinstance(pid, int) and host == socket.gethostname():
            if pid != os.getpid() and pid_alive(pid, owner.get("start_time")):
                raise UserError(
                    f"{self.folder}: experiment is already running (pid {pid} on {host}, "
                    f"since {owner.get('since', '?')}); lock file {self.path}"
                )
        elif isinstance(pid, int):
            raise UserError(
                f"{self.folder}: experiment is locked by pid {pid} on host {host}; if that "
                f"process is gone, delete {self.path}"
            )
        # Dead owner on this host, or an unreadable lock file: take it over.
        self.took_over = owner
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this process still owns it."""
        if not self.held:
            return
        owner = self.owner()
        if owner and owner.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    @contextlib.contextmanager
    def hold(self) -> Iterator[ExperimentLock]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()


__all__ = ["ExperimentLock", "pid_alive", "process_start_time"]
