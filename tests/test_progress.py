"""Progress bars: drawn on a terminal, absent from piped logs, one mechanism for all."""

from __future__ import annotations

import ast
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

import metasuite
from metasuite.progress import bars_wanted, progress_bar
from synthetic_experiments import make_config, write_experiment

CURVES = [(0.5, 0.4), (0.6, 0.5), (0.7, 0.55)]


@pytest.fixture
def report_suite(tmp_path):
    """Three groups, so the report's plot bar has several steps to redraw."""
    root, configs = tmp_path / "experiments", tmp_path / "experiment_config"
    for way in (5, 10, 20):
        cfg = make_config(f"omni_{way}w1s_s0", 0, way=way)
        write_experiment(
            root, cfg, status="done", curves=CURVES, test=(0.9, 0.01, 0.88, 0.01), generated=configs
        )
    return root, configs


def _report_command(root: Path, configs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "metasuite", "report", "--experiments-root", str(root),
            "--configs", str(configs), "--out", str(out)]  # fmt: skip


def test_piped_stderr_gets_no_bar(report_suite, tmp_path):
    root, configs = report_suite
    done = subprocess.run(
        _report_command(root, configs, tmp_path / "out"), capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"\r" not in done.stderr, done.stderr[:500]
    assert b"plots:" not in done.stderr


def test_a_terminal_still_gets_the_bar(report_suite, tmp_path):
    root, configs = report_suite
    master, slave = pty.openpty()
    # A fresh pty is 0x0; tqdm draws nothing into zero columns.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        _report_command(root, configs, tmp_path / "out"),
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert process.wait() == 0
    assert b"plots" in seen and b"\r" in seen


def test_quiet_hides_the_bar_on_a_terminal_too():
    class Terminal:
        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> int:
            raise AssertionError("a quiet bar wrote something")

        def flush(self) -> None:
            pass

    assert bars_wanted(False, Terminal())
    assert not bars_wanted(True, Terminal())
    with progress_bar(range(3), quiet=True, file=Terminal()) as bar:
        assert list(bar) == [0, 1, 2]


def test_every_bar_goes_through_metasuite_progress():
    """One rule for every bar: no module but metasuite.progress imports tqdm."""
    package = Path(metasuite.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "progress.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n == "tqdm" or n.startswith("tqdm.") for n in names):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}")
    assert offenders == []
