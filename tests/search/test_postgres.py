"""A study in a real PostgreSQL server (started here, in a temp folder), shared by two
drivers one after the other; skipped, with the reason, where no server can start."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from metasuite.search.engine import Study
from metasuite.search.spec import load_search
from search_helpers import write_search


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throw-away server; yields its SQLAlchemy URL. PostgreSQL refuses to run as root,
    so as root it runs as the ``postgres`` (else ``nobody``) user."""
    pytest.importorskip("psycopg2", reason="psycopg2 (pip install psycopg2-binary) is missing")
    bindir = _bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    prefix: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="metasuite-pg-"))
    if os.geteuid() == 0:
        for user in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(user)
                break
        else:
            pytest.skip("running as root and no postgres/nobody user to run PostgreSQL as")
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser to start PostgreSQL as another user")
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        prefix = ["runuser", "-u", entry.pw_name, "--"]
    port = _free_port()
    data, log = folder / "data", folder / "server.log"
    try:
        init = subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "metasuite",
             "--auth=trust", "--no-sync"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if init.returncode:
            pytest.skip(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
        options = f"-p {port} -k {folder} -h 127.0.0.1 -F"
        start = subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log),
             "-w", "-t", "60", "start"],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        if start.returncode:
            tail = log.read_text()[-300:] if log.exists() else start.stderr
            pytest.skip(f"PostgreSQL did not start: {tail.strip()}")
        try:
            yield f"postgresql+psycopg2://metasuite@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True, timeout=60,
            )  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_two_drivers_share_a_study_in_postgresql(tmp_path):
    with postgres_server() as url:
        search_file = write_search(tmp_path / "s", trials=2, epochs=2, iters=1)
        root = tmp_path / "experiments"
        base = [sys.executable, "-m", "metasuite", "tune", str(search_file), "--storage", url,
                "--experiments-root", str(root), "--quiet"]  # fmt: skip
        env = dict(os.environ, METASUITE_NUM_THREADS="1")
        first = subprocess.run(base, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        # a second driver (here: later; it could be on another machine) continues the study
        second = subprocess.run(
            [*base, "--trials", "3"], env=env, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 0, second.stderr
        rows = Study(load_search(search_file), url).rows()
        assert [r.number for r in rows] == [0, 1, 2]
        assert all(r.state in ("complete", "pruned") for r in rows), rows
        assert not (search_file.parent / "out" / "study.db").exists()  # not in SQLite
