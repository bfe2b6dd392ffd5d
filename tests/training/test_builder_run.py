"""``metasuite train`` end to end on real Omniglot: kills, signals, pauses, resumes.

Every interrupted run is compared with one uninterrupted reference run of the same
config: identical summary rows (every column but the wall-clock epoch time) and an
identical test summary, bit for bit.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from builder_helpers import (
    read_json,
    summary_rows,
    train,
    train_command,
    train_env,
    write_config,
)
from metasuite.config import load_config
from metasuite.stats import mean_ci95, per_task_accuracy
from metasuite.training.checkpoint import CheckpointStore, load_checkpoint
from metasuite.training.lock import ExperimentLock

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, omniglot_folder: Path) -> dict[str, Any]:
    """One uninterrupted run of the tiny experiment (``omniglot_folder``: the data set is
    unpacked and cached before any subprocess needs it)."""
    base = tmp_path_factory.mktemp("reference")
    config = write_config(base)
    proc = train(config, base / "experiments")
    assert proc.returncode == 0, proc.stderr
    folder = base / "experiments" / "tiny"
    return {
        "config": config,
        "folder": folder,
        "rows": summary_rows(folder),
        "test": read_json(folder / "test_summary.json"),
        "state": read_json(folder / "state.json"),
    }


def assert_same_as_reference(folder: Path, reference: dict[str, Any]) -> None:
    assert summary_rows(folder) == reference["rows"]
    assert read_json(folder / "test_summary.json") == reference["test"]
    state = read_json(folder / "state.json")
    assert state["status"] == "done"
    for key in ("epoch", "iteration", "best_val_accuracy", "best_val_epoch", "test_accuracy"):
        assert state[key] == reference["state"][key], key


def test_reference_run_outputs(reference: dict[str, Any]) -> None:
    folder, state, test = reference["folder"], reference["state"], reference["test"]
    assert (folder / "config.json").is_file()
    assert (folder / "logs" / "train.log").read_text().count("epoch ") >= 3
    assert [r["epoch"] for r in reference["rows"]] == ["0", "1", "2"]
    assert state["status"] == "done" and state["epoch"] == 3 and state["iteration"] == 18
    assert not (folder / "lock").exists()
    # No left-overs once done: no lock guard, no mid-epoch resume point.
    assert not (folder / ".lock.guard").exists()
    assert not list((folder / "checkpoints").glob("iter_*.pt"))
    # The best 2 epochs by validation accuracy form the ensemble, best first.
    val = {int(r["epoch"]): float(r["val_accuracy_mean"]) for r in reference["rows"]}
    ranked = sorted(val, key=lambda e: (-val[e], e))
    assert test["ensemble"]["epochs"] == ranked[:2]
    assert test["best_single"]["epoch"] == ranked[0] == state["best_val_epoch"]
    assert state["best_val_accuracy"] == val[ranked[0]]
    assert state["test_accuracy"] == test["ensemble"]["accuracy_mean"]
    # Pruning kept exactly those epochs' checkpoints plus the two newest files.
    store = CheckpointStore(folder / "checkpoints")
    assert set(ranked[:2]) <= set(store.epoch_files())
    assert len(store.files()) <= 4


def test_ensemble_recomputed_independently(reference: dict[str, Any]) -> None:
    """Average the saved models' test probabilities here and compare with the summary."""
    from metasuite.data.tasks import FewShotTasks
    from metasuite.learner.system import MamlSystem

    cfg = load_config(reference["config"])
    tasks = FewShotTasks.from_config(cfg, quiet=True)
    batch = tasks.test.batch(list(range(cfg.num_evaluation_tasks)))
    files = CheckpointStore(reference["folder"] / "checkpoints").epoch_files()
    probs = []
    for epoch in reference["test"]["ensemble"]["epochs"]:
        learner = MamlSystem(cfg, "cpu")
        learner.load_state_dict(load_checkpoint(files[epoch].path)["learner"])
        probs.append(learner.evaluate(batch).probabilities.double())
    ensemble = per_task_accuracy(torch.stack(probs).mean(0), batch.query_y)
    single = per_task_accuracy(probs[0], batch.query_y)
    summary = reference["test"]
    assert summary["ensemble"]["num_tasks"] == cfg.num_evaluation_tasks
    assert summary["ensemble"]["accuracy_mean"] == pytest.approx(sum(ensemble) / len(ensemble))
    assert summary["ensemble"]["accuracy_ci95"] == pytest.approx(mean_ci95(ensemble)[1])
    assert summary["best_single"]["accuracy_mean"] == pytest.approx(sum(single) / len(single))


def error_lines(stderr: str) -> list[str]:
    """The error lines of a run's stderr (log lines come before them); no traceback."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("metasuite train: error:")]


def _wait_for(predicate, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_at_random_points_resumes_exactly(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    config, root = write_config(tmp_path), tmp_path / "experiments"
    folder = root / "tiny"
    note = f"(kill-point seed {seed})"

    # 1. From outside, while a checkpoint's temporary file is written but not renamed.
    proc = subprocess.Popen(
        train_command(config, root),
        env=train_env(METASUITE_FAULT_SLEEP="checkpoint-write:60"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(
            lambda: any(p.name.endswith(".tmp") for p in (folder / "checkpoints").glob(".*")),
            what="a checkpoint write",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not CheckpointStore(folder / "checkpoints").files(), note

    # 2. At a random visit (counted per process) to two random fault points of the
    # training phase, then to one of the test phase.
    sites = rng.sample(["iteration", "checkpoint-write", "checkpoint-done", "validation"], 2)
    plan = [(site, rng.randint(1, 4)) for site in [*sites, "test"]]
    killed = 1
    for site, visit in plan:
        result = train(config, root, METASUITE_FAULT=f"{site}:{visit}")
        assert result.returncode in (-signal.SIGKILL, 0), (site, visit, result.stderr, note)
        killed += result.returncode == -signal.SIGKILL
    final = train(config, root)
    assert final.returncode == 0, final.stderr + note
    assert killed >= 3, note
    assert_same_as_reference(folder, reference)
    log = (folder / "logs" / "train.log").read_text()
    assert "took over a stale lock" in log
    assert "removed 1 unfinished checkpoint" in log
    assert not list((folder / "checkpoints").glob(".*.tmp"))


def test_sigterm_checkpoints_and_exits_4(reference: dict[str, Any], tmp_path: Path) -> None:
    config, root = write_config(tmp_path), tmp_path / "experiments"
    folder = root / "tiny"
    proc = subprocess.Popen(
        train_command(config, root),
        env=train_env(METASUITE_FAULT_SLEEP="iteration:0.3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def started() -> bool:
        try:
            return read_json(folder / "state.json")["iteration"] >= 2
        except (OSError, ValueError, KeyError):
            return False

    _wait_for(started, what="training to start")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 4, stderr
    state = read_json(folder / "state.json")
    assert state["status"] == "interrupted"
    assert "SIGTERM" in state["message"] and "SIGTERM" in stderr
    newest = CheckpointStore(folder / "checkpoints").files()[-1]
    assert newest.iteration == state["iteration"] < 18
    assert not (folder / "lock").exists()

    resumed = train(config, root)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_reference(folder, reference)


@pytest.mark.parametrize("site", ["validation", "test"])
def test_a_stop_between_evaluation_batches_is_honoured_at_once_and_resumes_exactly(
    reference: dict[str, Any], tmp_path: Path, site: str
) -> None:
    """Issue 29: a SIGTERM during validation or the test waited for the whole split (24-60
    s seen; forever with a huge num_evaluation_tasks), and one during the test threw the
    finished part away only after that. The SIGTERM arrives after the first batch (of
    epoch 1's validation, of the first test model): the stop is honoured before the
    second batch, and the rerun ends exactly as the uninterrupted run."""
    config, root = write_config(tmp_path), tmp_path / "experiments"
    folder = root / "tiny"
    stopped = train(config, root, METASUITE_FAULT_TERM=f"{site}:1")
    assert stopped.returncode == 4, stopped.stderr
    state = read_json(folder / "state.json")
    assert state["status"] == "interrupted" and "stopped by SIGTERM" in state["message"]
    if site == "validation":
        # Epoch 1's training is kept (a checkpoint at its last iteration), its validation
        # was cut: no summary row yet, no epoch-end checkpoint.
        assert summary_rows(folder) == []
        newest = CheckpointStore(folder / "checkpoints").files()[-1]
        assert newest.iteration == 6 and not newest.is_epoch_end
    else:
        assert "during the test" in state["message"] and "test again" in state["message"]
        assert not (folder / "test_summary.json").exists()
        assert summary_rows(folder) == reference["rows"]
    resumed = train(config, root)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_reference(folder, reference)


def test_pause_fallback_config_check_and_continue(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "experiments"
    folder = root / "tiny"
    paused = write_config(tmp_path, total_epochs_before_pause=1)

    first = train(paused, root)
    assert first.returncode == 3, first.stderr
    state = read_json(folder / "state.json")
    assert state["status"] == "paused" and state["epoch"] == 1
    assert summary_rows(folder) == reference["rows"][:1]

    # A training setting changed: refused in one line that lists the difference.
    changed = write_config(
        tmp_path, "changed", total_epochs_before_pause=1, meta_learning_rate=0.002
    )
    refused = train(changed, root)
    assert refused.returncode == 2
    (error,) = error_lines(refused.stderr)
    assert "meta_learning_rate: 0.001 -> 0.002" in error and "--force" in error
    assert read_json(folder / "state.json")["status"] == "paused"

    # The newest checkpoint (end of epoch 0) is truncated: fall back, with a warning.
    store = CheckpointStore(folder / "checkpoints")
    newest = store.files()[-1]
    assert newest.epoch_end == 0
    newest.path.write_bytes(newest.path.read_bytes()[:1000])
    second = train(paused, root)
    assert second.returncode == 3, second.stderr
    assert "falling back" in second.stderr and newest.path.name in second.stderr
    assert read_json(folder / "state.json")["epoch"] == 1

    # Only a non-training setting (the pause) differs from the snapshot: accepted.
    rest = write_config(tmp_path, "rest", total_epochs_before_pause=10)
    third = train(rest, root)
    assert third.returncode == 0, third.stderr
    assert_same_as_reference(folder, reference)

    # Running a finished experiment again changes nothing.
    before = (folder / "test_summary.json").read_bytes()
    again = train(rest, root)
    assert again.returncode == 0 and "already done" in again.stderr
    assert (folder / "test_summary.json").read_bytes() == before


def test_second_process_is_refused_by_the_lock(tmp_path: Path, omniglot_folder: Path) -> None:
    config, root = write_config(tmp_path), tmp_path / "experiments"
    with ExperimentLock(root / "tiny").hold():
        result = train(config, root)
    assert result.returncode == 2
    (error,) = error_lines(result.stderr)
    assert f"already running (pid {os.getpid()}" in error


def test_continue_from_an_earlier_epoch(reference: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "experiments"
    shutil.copytree(reference["folder"], root / "tiny")
    epoch = min(CheckpointStore(root / "tiny" / "checkpoints").epoch_files())
    config = write_config(tmp_path, continue_from_epoch=epoch)
    result = train(config, root)
    assert result.returncode == 0, result.stderr
    assert f"resuming from epoch_{epoch:04d}" in result.stderr
    assert_same_as_reference(root / "tiny", reference)


def test_evaluate_on_test_set_only(reference: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "experiments"
    shutil.copytree(reference["folder"], root / "tiny")
    (root / "tiny" / "test_summary.json").unlink()
    rows_before = summary_rows(root / "tiny", with_time=True)
    config = write_config(tmp_path, evaluate_on_test_set_only=True)
    result = train(config, root)
    assert result.returncode == 0, result.stderr
    assert read_json(root / "tiny" / "test_summary.json") == reference["test"]
    assert summary_rows(root / "tiny", with_time=True) == rows_before  # nothing trained


def test_disk_full_at_a_checkpoint_is_one_line_and_resumable(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    """A real full file system (a small tmpfs) under the experiment: the next checkpoint
    write fails with one line and exit 1, the previous checkpoint is kept, and once
    there is room again the run resumes to the reference results."""
    from disk_helpers import fill, small_tmpfs

    with small_tmpfs(tmp_path / "small", "4m") as root:
        folder = root / "tiny"
        config = write_config(tmp_path, total_epochs_before_pause=1)
        assert train(config, root).returncode == 3
        kept = [f.path.name for f in CheckpointStore(folder / "checkpoints").files()]
        # Room for the state, manifest and log, not for a ~94 kB checkpoint.
        filler = fill(root, leave_bytes=40_000)
        full = train(write_config(tmp_path, "rest"), root)
        assert full.returncode == 1, full.stderr
        assert "Traceback" not in full.stderr and "Logging error" not in full.stderr
        (error,) = error_lines(full.stderr)
        assert f"no space left on {root}" in error and "/checkpoints/iter_" in error
        assert [f.path.name for f in CheckpointStore(folder / "checkpoints").files()] == kept
        assert not list((folder / "checkpoints").glob(".*.tmp"))
        assert read_json(folder / "state.json")["status"] == "failed"

        filler.unlink()
        resumed = train(write_config(tmp_path, "rest"), root)
        assert resumed.returncode == 0, resumed.stderr
        assert_same_as_reference(folder, reference)


def test_a_changed_thread_count_on_resume_is_said_once_and_recorded(
    tmp_path: Path, omniglot_folder: Path
) -> None:
    """The CPU thread count changes the order of float summation, as the world size does:
    one rule for both (issue 29), a resume may change them, never silently: one warning
    line, and the manifest records it (the resume then matches an uninterrupted run to
    float precision only)."""
    root = tmp_path / "experiments"
    folder = root / "tiny"
    config = write_config(tmp_path, total_epochs_before_pause=1, total_epochs=2)
    assert train(config, root).returncode == 3
    resumed = train(config, root, METASUITE_NUM_THREADS="2")
    assert resumed.returncode == 0, resumed.stderr
    said = [line for line in resumed.stderr.splitlines() if "num_threads: 1 -> 2" in line]
    assert len(said) == 1 and "not bit for bit" in said[0], resumed.stderr
    runs = read_json(folder / "manifest.json")["runs"]
    assert runs[0]["numerics"] == {"backend": "loop", "precision": "fp32", "num_threads": 1}
    assert runs[-1]["numerics"]["num_threads"] == 2
    assert runs[-1]["execution_changes"] == ["num_threads: 1 -> 2"]
    assert runs[-1]["forced_differences"] == []
    assert "CPU thread count: 1 -> 2" in runs[-1]["changes_since_previous_run"]


def test_damaged_older_epoch_checkpoint_is_recorded_as_an_incomplete_ensemble(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    """The second model of the 2-model ensemble is damaged: the test still runs on the
    rest, but test_summary.json, state, the final line, status and report all say the
    ensemble is incomplete, instead of a quietly different accuracy."""
    root = tmp_path / "experiments"
    folder = root / "tiny"
    shutil.copytree(reference["folder"], folder)
    (folder / "test_summary.json").unlink()
    best, second = reference["test"]["ensemble"]["epochs"]
    damaged = CheckpointStore(folder / "checkpoints").epoch_files()[second].path
    damaged.write_bytes(damaged.read_bytes()[:-500])
    result = train(write_config(tmp_path, evaluate_on_test_set_only=True), root)
    assert result.returncode == 0, result.stderr
    ensemble = read_json(folder / "test_summary.json")["ensemble"]
    assert ensemble["epochs"] == [best] and ensemble["left_out_epochs"] == [second]
    assert damaged.name in ensemble["left_out_reasons"][0]
    last = result.stderr.strip().splitlines()[-1]
    assert "ENSEMBLE INCOMPLETE" in last and f"epochs [{second + 1}] left out" in last  # 1-based
    assert read_json(folder / "state.json")["ensemble_left_out"] == [second]

    env = train_env()
    status = subprocess.run(
        [*train_command(config=Path("-"), root=root)[:3], "status", "--experiments-root",
         str(root)], env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert f"ensemble incomplete: epochs [{second + 1}] left out" in status.stdout
    out = tmp_path / "report"
    report = subprocess.run(
        [*train_command(config=Path("-"), root=root)[:3], "report", "--experiments-root",
         str(root), "--out", str(out)], env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    tables = "".join(p.read_text() for p in out.rglob("*.md"))
    assert f"(incomplete: epochs [{second + 1}] left out)" in tables


@pytest.mark.parametrize("after_s", [0.3, 1.5])
def test_sigterm_during_start_up_stops_cleanly_with_exit_4(
    tmp_path: Path, omniglot_folder: Path, after_s: float
) -> None:
    """While torch and the data load (the first seconds), SIGTERM used to kill the
    process with 143; now it is a clean stop, exit 4, recorded as interrupted (a rerun
    then starts as after any stop: test_sigterm_checkpoints_and_exits_4)."""
    config, root = write_config(tmp_path), tmp_path / "experiments"
    proc = subprocess.Popen(
        train_command(config, root), env=train_env(), stderr=subprocess.PIPE, text=True
    )
    time.sleep(after_s)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert "Traceback" not in stderr
    if proc.returncode == 0:  # the whole run beat the signal (a very fast machine)
        pytest.skip(f"the run finished within {after_s} s")
    assert proc.returncode == 4, stderr
    assert "stopped by SIGTERM" in stderr
    state = read_json(root / "tiny" / "state.json")
    assert state["status"] == "interrupted" and "during start-up" in state["message"]


def test_a_warning_on_resume_is_printed_once_and_kept_in_the_log(
    tmp_path: Path, omniglot_folder: Path
) -> None:
    """Issue 29: a damaged manifest on resume (and a changed class split, through the
    same path) was printed twice: as a Python warning and as a log line."""
    root = tmp_path / "experiments"
    folder = root / "tiny"
    config = write_config(tmp_path, total_epochs_before_pause=1, total_epochs=2)
    assert train(config, root).returncode == 3
    (folder / "manifest.json").write_text("{broken")
    resumed = train(config, root)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("previous manifest unreadable") == 1, resumed.stderr
    assert (folder / "logs" / "train.log").read_text().count("previous manifest unreadable") == 1


def test_resuming_an_unknown_data_set_with_other_classes_is_refused(tmp_path: Path) -> None:
    """Issue 29: an unknown data set (no archive, no known size) that lost a class
    between a pause and the resume trained on with exit 0; its class split must match
    the one the manifest recorded. --force lets it through, recorded."""
    import json
    import sys

    from data_helpers import class_arrays

    data_root = tmp_path / "data"
    class_arrays(data_root / "quickdraw", 12, per_class=6)
    config = {
        "experiment_name": "qd_tiny", "dataset_name": "quickdraw", "dataset_path": "quickdraw",
        "image_height": 28, "image_width": 28, "image_channels": 1,
        "train_val_test_split": [0.5, 0.25, 0.25], "num_classes_per_set": 3,
        "num_samples_per_class": 1, "num_target_samples": 1, "cnn_num_filters": 4,
        "number_of_training_steps_per_iter": 1, "number_of_evaluation_steps_per_iter": 1,
        "total_epochs": 2, "total_epochs_before_pause": 1, "total_iter_per_epoch": 2,
        "num_evaluation_tasks": 2, "batch_size": 2, "backend": "loop",
        "num_dataprovider_workers": 0,
    }  # fmt: skip
    path = tmp_path / "qd.json"
    path.write_text(json.dumps(config))
    root = tmp_path / "exp"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "metasuite", "train", "--config", str(path), "--gpus",
             "cpu", "--experiments-root", str(root), "--quiet", *extra],
            capture_output=True, text=True, timeout=300,
            env=train_env(DATASET_DIR=str(data_root)),
        )  # fmt: skip

    assert run().returncode == 3
    next(iter(sorted((data_root / "quickdraw").glob("*.np*")))).unlink()
    refused = run()
    assert refused.returncode == 2, refused.stderr
    (line,) = [x for x in refused.stderr.splitlines() if "error:" in x]
    assert "the data set's classes differ from those of the run being resumed" in line
    assert read_json(root / "qd_tiny" / "state.json")["status"] == "paused"
    forced = run("--force")
    assert forced.returncode == 0, forced.stderr
    last = read_json(root / "qd_tiny" / "manifest.json")["runs"][-1]
    assert any(d.startswith("class-split hash: ") for d in last["forced_differences"])
