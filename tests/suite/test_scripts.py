"""The generated experiment scripts: syntax, device arguments, exit codes, kill and resume."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from metasuite.cli import main
from metasuite.config import REPO_ROOT
from metasuite.suite.sweep import expand, load_suite
from suite_helpers import TINY_SUITE, write_suite

COMMITTED_SCRIPTS = sorted((REPO_ROOT / "experiment_scripts").glob("*.sh"))

# Stands in for python: the launcher the script execs runs on the real interpreter
# ($REAL_PYTHON); the `metasuite train` it execs in turn ($PYTHON) records how it was
# called, then exits with $FAKE_EXIT.
FAKE_PYTHON = """#!/usr/bin/env bash
if [[ "$1 $2" == "-m metasuite.training.launch" ]]; then exec "$REAL_PYTHON" "$@"; fi
{
  echo "pid=$$"
  echo "cvd=${CUDA_VISIBLE_DEVICES-unset}"
  echo "root=${METASUITE_EXPERIMENTS_ROOT-unset}"
  printf 'arg=%s\\n' "$@"
} > "$FAKE_OUT"
exit "${FAKE_EXIT:-0}"
"""


def test_committed_scripts_are_valid_bash():
    assert len(COMMITTED_SCRIPTS) == 36
    for script in COMMITTED_SCRIPTS:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


@pytest.mark.skipif(
    shutil.which("shellcheck") is None,
    reason="shellcheck is not installed (install.sh installs it with apt); "
    "bash -n is still checked by test_committed_scripts_are_valid_bash",
)
def test_committed_scripts_pass_shellcheck():
    result = subprocess.run(
        ["shellcheck", "--shell=bash", *map(str, COMMITTED_SCRIPTS)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def fake_suite(tmp_path):
    """A generated tiny suite in a folder whose name has a space, and a fake python."""
    root = tmp_path / "my suite"
    suite = write_suite(root)
    assert main(["generate", "--suite", str(suite)]) == 0
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    exp = expand(load_suite(suite))[0]
    return exp, fake, tmp_path / "calls.txt"


def _call(exp, fake, out, *args, cwd="/", **env):
    full_env = {**os.environ, "PYTHON": str(fake), "FAKE_OUT": str(out), **env}
    full_env["REAL_PYTHON"] = sys.executable
    full_env.pop("CUDA_VISIBLE_DEVICES", None)
    out.unlink(missing_ok=True)
    proc = subprocess.Popen(
        ["bash", str(exp.script_path), *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = proc.communicate(timeout=60)
    calls = out.read_text().splitlines() if out.exists() else None
    return proc, stderr, calls


@pytest.mark.parametrize(
    ("args", "cvd", "gpus"),
    [
        ((), "", "cpu"),
        (("cpu",), "", "cpu"),
        (("3",), "3", "0"),
        (("12",), "12", "0"),
        # Several GPUs: train sees them as 0..n-1 and runs one process per GPU.
        (("2", "5"), "2,5", "0,1"),
        (("0", "1", "3"), "0,1,3", "0,1,2"),
    ],
)
def test_devices_become_cuda_visible_devices(fake_suite, args, cvd, gpus):
    exp, fake, out = fake_suite
    proc, stderr, calls = _call(exp, fake, out, *args)
    assert proc.returncode == 0, stderr
    assert calls[1] == f"cvd={cvd}"
    args_seen = [c.removeprefix("arg=") for c in calls if c.startswith("arg=")]
    config = str(exp.config_path)
    assert args_seen == ["-m", "metasuite", "train", "--config", config, "--gpus", gpus]
    # exec: python replaces the shell, so signals sent to the script's pid reach it.
    assert calls[0] == f"pid={proc.pid}"


def test_extra_arguments_env_and_any_cwd(fake_suite, tmp_path):
    exp, fake, out = fake_suite
    proc, stderr, calls = _call(
        exp, fake, out, "0", "--", "--quiet", "--force", cwd=tmp_path,
        METASUITE_EXPERIMENTS_ROOT="/somewhere/else",
    )  # fmt: skip
    assert proc.returncode == 0, stderr
    assert calls[-2:] == ["arg=--quiet", "arg=--force"]
    assert "root=/somewhere/else" in calls


def test_relative_path_with_exported_cdpath(fake_suite):
    # bash's cd prints the folder it found through CDPATH; inside $(...) that used to
    # turn script_dir into two lines and the script died with exit 1.
    exp, fake, out = fake_suite
    root = exp.script_path.parent.parent
    relative = dataclasses.replace(exp, script_path=exp.script_path.relative_to(root))
    proc, stderr, calls = _call(relative, fake, out, "cpu", cwd=root, CDPATH=str(root))
    assert proc.returncode == 0, stderr
    assert f"arg={exp.config_path}" in calls


@pytest.mark.parametrize("code", [1, 2, 3, 4])
def test_exit_status_propagates(fake_suite, code):
    exp, fake, out = fake_suite
    proc, _, calls = _call(exp, fake, out, "cpu", FAKE_EXIT=str(code))
    assert calls is not None and proc.returncode == code


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("x",), "'x' is not a device"),
        (("-1",), "'-1' is not a device"),
        (("cpu", "0"), "'cpu' cannot be combined with GPU ids"),
        (("1", "1"), "device '1' is given twice"),
    ],
)
def test_device_mistakes_exit_2_without_running(fake_suite, args, message):
    exp, fake, out = fake_suite
    proc, stderr, calls = _call(exp, fake, out, *args)
    assert proc.returncode == 2
    assert message in stderr
    assert calls is None  # python was never started


def test_missing_config_is_reported(fake_suite):
    exp, fake, out = fake_suite
    exp.config_path.unlink()
    proc, stderr, calls = _call(exp, fake, out)
    assert proc.returncode == 2 and "run: metasuite generate" in stderr and calls is None


# ----------------------------------------------------------- end to end, real training


def _wait_for(predicate, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_script_killed_then_run_again_resumes_and_finishes(tmp_path):
    """Real Omniglot, CPU: SIGTERM mid-run → exit 4; the same command resumes to the end."""
    suite_text = TINY_SUITE.replace("iters = 3", "iters = 6")
    suite = write_suite(tmp_path, suite_text)
    assert main(["generate", "--suite", str(suite), "--only", "maml_5way_1shot_s0"]) == 0
    exp = expand(load_suite(suite), only=["maml_5way_1shot_s0"])[0]
    experiments = tmp_path / "experiments"
    env = {**os.environ, "METASUITE_EXPERIMENTS_ROOT": str(experiments)}
    folder = experiments / exp.name
    command = ["bash", str(exp.script_path), "cpu", "--", "--quiet"]

    first = subprocess.Popen(command, cwd="/", env=env, stderr=subprocess.PIPE, text=True)
    got_checkpoint = _wait_for(
        lambda: any((folder / "checkpoints").glob("iter_*.pt")), timeout=300, proc=first
    )
    assert got_checkpoint, f"no checkpoint before exit {first.poll()}: {first.stderr.read()}"
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 4, err
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "interrupted"
    stopped_at = state["iteration"]
    assert 1 <= stopped_at < 12

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "done"
    assert (state["epoch"], state["iteration"]) == (2, 12)
    log = (folder / "logs" / "train.log").read_text()
    # The builder logs "resuming from <checkpoint> (E epochs, N iterations done)".
    assert f"{stopped_at} iterations done)" in log
    rows = (folder / "summary_statistics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header + one row per epoch, none repeated by the resume
    assert (folder / "test_summary.json").exists()
