"""One process per experiment folder: a lock file that names its owner.

Two processes training the same experiment would overwrite each other's checkpoints
and statistics. The lock file holds the owner's pid, host and process start time;
a lock whose owner is gone (killed with SIGKILL, machine rebooted) is taken over with a
message, because a cluster job killed at its time limit cannot clean up after itself.

Creating and taking over the lock happens under an ``flock`` on a guard file, so two
processes that find the same stale lock cannot both take it over. The lock file itself
is created complete (written to a temporary name, then hard-linked into place), so a
reader never sees it half written.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metasuite.errors import UserError

LOCK_NAME = "lock"
GUARD_NAME = ".lock.guard"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against a recycled pid), if known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22, counted after the parenthesised command name (which may hold spaces).
    return stat.rpartition(")")[2].split()[19]


def _alive(pid: int, start_time: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    if start_time is not None:
        current = _start_time(pid)
        if current is not None and current != start_time:
            return False  # the pid was reused by another process
    return True


class ExperimentLock:
    """``<folder>/lock``, held while a process works on the experiment."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False
        self.took_over: dict[str, Any] | None = None

    def _owner(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
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
            "start_time": _start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with open(self.folder / GUARD_NAME, "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                owner = self._owner()
                if owner is not None:
                    self._refuse_or_take_over(owner)
                tmp = self.folder / f".lock.{os.getpid()}.tmp"
                tmp.write_text(json.dumps(me) + "\n")
                try:
                    os.link(tmp, self.path)  # fails if the file exists: exclusive create
                finally:
                    tmp.unlink(missing_ok=True)
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)
        self.held = True

    def _refuse_or_take_over(self, owner: dict[str, Any]) -> None:
        pid, host = owner.get("pid"), owner.get("host")
        if isinstance(pid, int) and host == socket.gethostname():
            if pid != os.getpid() and _alive(pid, owner.get("start_time")):
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
        owner = self._owner()
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


__all__ = ["ExperimentLock"]
