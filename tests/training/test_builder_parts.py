"""The builder's parts on their own: lock, signals, devices, statistics, folder files."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from metasuite.config import ExperimentConfig
from metasuite.errors import UserError
from metasuite.training.experiment_dir import SUMMARY_COLUMNS, ExperimentDir
from metasuite.training.lock import ExperimentLock
from metasuite.training.runner import check_root_writable
from metasuite.training.runtime import resolve_devices
from metasuite.training.signals import StopRequest

# ------------------------------------------------------------------------- lock


def _hold_lock_in_subprocess(folder: Path) -> subprocess.Popen:
    script = textwrap.dedent(
        f"""
        import sys, time
        from metasuite.training.lock import ExperimentLock
        lock = ExperimentLock({str(folder)!r})
        lock.acquire()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_refuses_a_second_process(tmp_path: Path) -> None:
    proc = _hold_lock_in_subprocess(tmp_path)
    try:
        with pytest.raises(UserError, match=f"already running \\(pid {proc.pid}"):
            ExperimentLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait()


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    proc = _hold_lock_in_subprocess(tmp_path)
    proc.send_signal(signal.SIGKILL)  # it cannot clean up
    proc.wait()
    assert (tmp_path / "lock").exists()
    lock = ExperimentLock(tmp_path)
    lock.acquire()
    assert lock.took_over is not None and lock.took_over["pid"] == proc.pid
    assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "lock").exists()


def test_lock_with_a_recycled_pid_is_stale(tmp_path: Path) -> None:
    """Our own pid with another start time: the process that wrote it is gone."""
    (tmp_path / "lock").write_text(
        json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "start_time": "1"})
    )
    lock = ExperimentLock(tmp_path)
    lock.acquire()
    assert lock.took_over is not None
    lock.release()


def test_lock_on_another_host_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lock").write_text(json.dumps({"pid": 12345, "host": "elsewhere.example"}))
    with pytest.raises(UserError, match=r"elsewhere\.example"):
        ExperimentLock(tmp_path).acquire()


# ------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_is_recorded_second_ctrl_c_restores_default(sig: signal.Signals) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), sig)
        time.sleep(0.05)  # let the handler run
        assert stop.requested and stop.signal_name == sig.name
        # A second Ctrl-C would act normally (KeyboardInterrupt) ...
        assert signal.getsignal(signal.SIGINT) == before[signal.SIGINT]
        # ... a repeated SIGTERM (Slurm + forwarding scripts) is only counted.
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before


def test_repeated_sigterm_does_not_cancel_the_checkpointing_stop() -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # would terminate the process if not handled
        time.sleep(0.05)
        assert stop.signal_name == "SIGTERM" and stop.repeated_sigterms == 1


# ------------------------------------------------------------------------- devices


def test_devices_cpu() -> None:
    assert resolve_devices("cpu") == [torch.device("cpu")]
    assert resolve_devices(" CPU ") == [torch.device("cpu")]


@pytest.mark.parametrize("spec", ["x", "0,a", "-1", "0.5", ""])
def test_bad_gpu_spec_is_a_user_error(spec: str) -> None:
    with pytest.raises(UserError, match="--gpus"):
        resolve_devices(spec)


def test_gpu_ids_without_cuda_or_out_of_range(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_devices("0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match="no GPU 2"):
        resolve_devices("0,2")
    with pytest.raises(UserError, match="twice"):
        resolve_devices("1,1")
    assert resolve_devices("1,0") == [torch.device("cuda", 1), torch.device("cuda", 0)]


# ------------------------------------------------------------------------- folder files


def test_summary_csv_floats_are_exact(tmp_path: Path) -> None:
    exp = ExperimentDir(tmp_path / "e")
    exp.create()
    row = {c: 0.1 + i / 3 for i, c in enumerate(SUMMARY_COLUMNS)}
    row["epoch"] = 0
    exp.write_summary([row])
    (read,) = exp.read_summary()
    assert list(read) == list(SUMMARY_COLUMNS)
    assert all(float(read[c]) == row[c] for c in SUMMARY_COLUMNS)


def test_state_json_has_the_design_fields(tmp_path: Path) -> None:
    exp = ExperimentDir(tmp_path / "e")
    exp.create()
    exp.write_state(
        "paused",
        config=ExperimentConfig(total_epochs=3, total_iter_per_epoch=7),
        epoch=1,
        iteration=7,
        best_val_accuracy=math.nan,
        best_val_epoch=None,
        message="m",
    )
    state = exp.read_state()
    assert state is not None
    assert set(state) == {
        "status", "epoch", "iteration", "total_epochs", "total_iter_per_epoch",
        "best_val_accuracy", "best_val_epoch", "test_accuracy", "pid", "host", "updated",
        "message", "world_size",
    }  # fmt: skip
    assert state["status"] == "paused" and state["total_iter_per_epoch"] == 7
    assert state["world_size"] == 1  # a plain process; the builder passes its world
    assert state["best_val_accuracy"] is None  # NaN is not JSON


def test_unwritable_root_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="not writable"):
        check_root_writable(blocker / "experiments")
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="not writable"):
            check_root_writable(locked)


def test_lock_leaves_nothing_behind(tmp_path: Path) -> None:
    """The guard is an flock on the folder itself: no .lock.guard in every experiment."""
    with ExperimentLock(tmp_path / "exp").hold():
        assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["lock"]
    assert list((tmp_path / "exp").iterdir()) == []
