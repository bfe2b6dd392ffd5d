"""Shared by the builder tests: a tiny real-Omniglot experiment and a CLI runner.

The experiment is small enough that a whole run (3 epochs of 6 meta-iterations, 8
validation and 8 test tasks) takes a few seconds, yet it exercises every part of the
loop: mid-epoch checkpoints (every 2 iterations), MSL and first->second order switches
across epochs, pruning to the best 2 epochs, and a 2-model test ensemble.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

TINY: dict[str, Any] = {
    "experiment_name": "tiny",
    "dataset_name": "omniglot_dataset",
    "dataset_path": "omniglot_dataset",
    "cnn_num_filters": 8,
    "number_of_training_steps_per_iter": 2,
    "number_of_evaluation_steps_per_iter": 1,
    "multi_step_loss_num_epochs": 2,
    "first_order_to_second_order_epoch": 0,
    "total_iter_per_epoch": 6,
    "total_epochs": 3,
    "num_evaluation_tasks": 8,
    "batch_size": 2,
    "checkpoint_every_n_iters": 2,
    "max_models_to_save": 2,
    "backend": "loop",
    # The TensorBoard sink has its own tests; elsewhere its import (~0.5 s a process)
    # and event files are only cost.
    "tensorboard": False,
}


def write_config(folder: Path, name: str = "tiny", **changes: Any) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(TINY | changes, indent=2))
    return path


def train_command(config: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "metasuite", "train", "--config", str(config),
        "--gpus", "cpu", "--experiments-root", str(root), "--quiet", *extra,
    ]  # fmt: skip


def train_env(**extra: str) -> dict[str, str]:
    """One intra-op thread: runs being compared must use the same thread count, and the
    CI machine is shared."""
    env = dict(os.environ, METASUITE_NUM_THREADS="1")
    for key in ("METASUITE_FAULT", "METASUITE_FAULT_SLEEP", "METASUITE_FAULT_TERM"):
        env.pop(key, None)
    env.update(extra)
    return env


def train(
    config: Path, root: Path, *extra: str, timeout: float = 180, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        train_command(config, root, *extra),
        env=train_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary_rows(folder: Path, *, with_time: bool = False) -> list[dict[str, str]]:
    """The CSV rows as text; epoch_time_s (wall clock) differs between any two runs."""
    with (folder / "summary_statistics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not with_time:
        for row in rows:
            del row["epoch_time_s"]
    return rows


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def killed_and_resumed(config: Path, base: Path) -> Path:
    """Train ``config`` uninterrupted, and again killed with SIGKILL mid-epoch 0 (after
    its checkpoint at iteration 4) then resumed; assert both end alike (summary rows and
    test results); return the resumed experiment's folder."""
    reference_root, root = base / "reference", base / "killed"
    done = train(config, reference_root)
    assert done.returncode == 0, done.stderr
    killed = train(config, root, METASUITE_FAULT="iteration:5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    final = train(config, root)
    assert final.returncode == 0, final.stderr
    name = read_json(config)["experiment_name"]
    folder, reference = root / name, reference_root / name
    assert summary_rows(folder) == summary_rows(reference)
    assert read_json(folder / "test_summary.json") == read_json(reference / "test_summary.json")
    return folder
