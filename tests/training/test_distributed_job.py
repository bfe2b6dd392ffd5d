"""Whole data-parallel jobs on the CPU: ``metasuite train --gpus cpu --nproc 2`` launches
torchrun with 2 gloo workers on the real Omniglot data. Exit codes survive the launcher,
a stop signal checkpoints every rank, a killed rank takes the job down, and the re-run
(with another number of processes) resumes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from builder_helpers import train_command, train_env, write_config

pytestmark = pytest.mark.slow

JOB_TIMEOUT_S = 240
"""A hang guard, not a speed assertion: a job that does not end by then has hung."""


def nproc(n: int) -> list[str]:
    return ["--nproc", str(n)]


def run(config: Path, root: Path, *extra: str, env: dict[str, str] | None = None):
    return subprocess.run(
        train_command(config, root, *extra),
        env=env or train_env(),
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
    )


def state(root: Path) -> dict:
    return json.loads((root / "tiny" / "state.json").read_text())


def summary(root: Path) -> list[dict[str, str]]:
    with open(root / "tiny" / "summary_statistics.csv") as f:
        return list(csv.DictReader(f))


def wait_for(predicate, what: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"job ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


def test_pause_and_signal_keep_their_exit_codes_and_every_run_resumes(tmp_path: Path) -> None:
    config = write_config(tmp_path, total_epochs=3, total_epochs_before_pause=1)
    root = tmp_path / "runs"

    first = run(config, root, *nproc(2))
    assert first.returncode == 3, first.stderr  # paused, through torchrun and the launcher
    assert state(root)["status"] == "paused" and state(root)["epoch"] == 1
    assert "on 2 processes (cpu, gloo)" in first.stderr

    # A SIGTERM to the launcher reaches each worker once; all stop after the same
    # meta-iteration, rank 0 checkpoints it, and the job says 4.
    env = train_env(METASUITE_FAULT_SLEEP="iteration:0.3")
    job = subprocess.Popen(
        train_command(config, root, *nproc(2)), env=env, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: state(root)["status"] == "running" and "resum" in log(root), "resume", job)
    iteration_before = state(root)["iteration"]
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=JOB_TIMEOUT_S)
    assert job.returncode == 4, stderr
    stopped = state(root)
    assert stopped["status"] == "interrupted", stopped
    assert stopped["iteration"] >= iteration_before

    # Resumed on ONE process (the checkpoint holds no trace of the number of ranks),
    # which pauses after its epoch; then on two again, to the end.
    single = run(config, root)
    assert single.returncode == 3, single.stderr
    assert f"{stopped['iteration']} iterations done" in single.stderr
    last = run(config, root, *nproc(2))
    assert last.returncode == 0, last.stderr
    done = state(root)
    assert done["status"] == "done" and done["epoch"] == 3
    assert [int(r["epoch"]) for r in summary(root)] == [0, 1, 2]


def log(root: Path) -> str:
    path = root / "tiny" / "logs" / "train.log"
    return path.read_text() if path.exists() else ""


def launcher_pid_file(launch_tmp: Path, rank: int) -> Path | None:
    found = list(launch_tmp.glob(f"metasuite-launch-*/pid.{rank}"))
    return found[0] if found else None


def test_killed_rank_takes_the_job_down_and_the_rerun_resumes(tmp_path: Path) -> None:
    config = write_config(tmp_path, total_epochs=2)
    root = tmp_path / "runs"
    launch_tmp = tmp_path / "launch"
    launch_tmp.mkdir()
    # TMPDIR: the launcher's folder (worker pids) lands where the test can read it.
    env = train_env(METASUITE_FAULT_SLEEP="iteration:0.3", TMPDIR=str(launch_tmp))
    job = subprocess.Popen(
        train_command(config, root, *nproc(2)), env=env, stderr=subprocess.PIPE, text=True
    )
    checkpoints = root / "tiny" / "checkpoints"
    wait_for(lambda: any(checkpoints.glob("iter_*.pt")), "mid-epoch checkpoint", job)
    pid_file = launcher_pid_file(launch_tmp, 1)
    assert pid_file is not None
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # rank 1 dies
    _, stderr = job.communicate(timeout=JOB_TIMEOUT_S)  # ... and the job with it, no hang
    assert job.returncode not in (0, 3, 4), stderr
    assert state(root)["status"] in ("failed", "running"), state(root)
    saved = sorted(p.name for p in checkpoints.glob("*.pt"))
    assert saved

    again = run(config, root, *nproc(2))
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr
    assert state(root)["status"] == "done" and state(root)["epoch"] == 2


def test_results_do_not_depend_on_the_number_of_ranks(tmp_path: Path) -> None:
    """Same config on 1 and 2 processes (one thread each): the same training up to
    float summation order. Only the mean training loss is compared, loosely: weights
    that differ by 1e-8 can flip a max-pool tie in a later iteration, so accuracies
    and validation can move by a task (tests/training/test_distributed.py checks the exact
    parts: tasks, gradients, state)."""
    config = write_config(tmp_path, total_epochs=1)
    one, two = tmp_path / "one", tmp_path / "two"
    assert run(config, one).returncode == 0
    result = run(config, two, *nproc(2))
    assert result.returncode == 0, result.stderr
    a, b = summary(one)[0], summary(two)[0]
    assert float(b["train_loss_mean"]) == pytest.approx(float(a["train_loss_mean"]), rel=1e-3)
    assert b["learning_rate"] == a["learning_rate"]
    # Only rank 0 wrote: one manifest run, one log, one set of checkpoints.
    manifest = json.loads((two / "tiny" / "manifest.json").read_text())
    assert len(manifest["runs"]) == 1


def test_a_user_error_inside_the_workers_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Issue 29: a user error raised by the ranks (here rank 0 finds no data set; the
    launcher cannot know before starting them) arrived as torchrun's 47-line
    ChildFailedError traceback. The launcher turns the ranks' status and the first
    rank's message into the line and exit status of one process."""
    config = write_config(tmp_path, dataset_path="/nonexistent_metasuite/no_such_dataset")
    result = run(config, tmp_path / "runs", *nproc(2))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("metasuite train: error: data set 'omniglot_dataset' not found")
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr
