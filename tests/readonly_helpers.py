"""A folder that refuses writes, for the tests of read-only locations.

Tests run as root here, and root writes through ``chmod``: a read-only tmpfs mount (or,
where mounting is not allowed, ``chattr +i``) refuses root too. Without root neither is
available, but then a plain ``chmod 0o555`` is enough.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*command: str) -> bool:
    if shutil.which(command[0]) is None:
        return False
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """Make ``path`` (created if missing) refuse writes for the block; undone after."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    if _run("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)):
        try:
            yield path
        finally:
            _run("umount", str(path))
        return
    if _run("chattr", "+i", str(path)):
        try:
            yield path
        finally:
            _run("chattr", "-i", str(path))
        return
    pytest.skip("running as root, but neither a read-only tmpfs mount nor chattr +i works here")
