"""Experiment folders written by hand, following the contract in docs/DESIGN.md.

Used by the status/report/show tests so they check the readers against the documented
file formats, not against whatever the builder happens to write today.
"""

from __future__ import annotations

import csv
import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from metasuite.config import ExperimentConfig, replace, save_config

SUMMARY_COLUMNS = (
    "epoch", "train_loss_mean", "train_loss_std", "train_accuracy_mean", "train_accuracy_std",
    "val_loss_mean", "val_loss_std", "val_accuracy_mean", "val_accuracy_std", "learning_rate",
    "epoch_time_s",
)  # fmt: skip

MAML_PLUS_PLUS: dict[str, object] = {}
MAML: dict[str, object] = {
    "use_multi_step_loss_optimization": False,
    "learnable_per_layer_per_step_inner_loop_learning_rate": False,
    "per_step_bn_statistics": False,
}


def make_config(
    name: str, seed: int, *, way: int = 5, shot: int = 1, **changes
) -> ExperimentConfig:
    values = {
        "experiment_name": name,
        "train_seed": seed,
        "val_seed": seed,
        "num_classes_per_set": way,
        "num_samples_per_class": shot,
        "total_epochs": 4,
        "total_iter_per_epoch": 10,
    }
    return replace(ExperimentConfig(), **(values | changes))


def write_experiment(
    root: Path,
    config: ExperimentConfig,
    *,
    status: str | None,
    curves: Sequence[tuple[float, float]] = (),
    test: tuple[float, float, float, float] | None = None,
    pid: int | None = None,
    host: str | None = None,
    checkpoint: bool = True,
    generated: Path | None = None,
) -> Path:
    """An experiment folder: ``curves`` are (train acc, val acc) per finished epoch,
    ``test`` is (ensemble mean, ensemble ci95, best-single mean, best-single ci95)."""
    if generated is not None:
        generated.mkdir(parents=True, exist_ok=True)
        save_config(config, generated / f"{config.experiment_name}.json")
    folder = root / config.experiment_name
    if status is None:
        return folder
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / "checkpoints").mkdir(exist_ok=True)
    if checkpoint:
        (folder / "checkpoints" / "latest.pt").write_bytes(b"x")
    save_config(config, folder / "config.json")
    with (folder / "summary_statistics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUMMARY_COLUMNS)
        for epoch, (train, val) in enumerate(curves):
            writer.writerow([epoch, 1.0, 0.1, train, 0.01, 1.1, 0.1, val, 0.02, 0.001, 3.5])
    best_epoch = max(range(len(curves)), key=lambda e: curves[e][1]) if curves else None
    state = {
        "status": status,
        "epoch": len(curves),
        "iteration": len(curves) * config.total_iter_per_epoch,
        "total_epochs": config.total_epochs,
        "total_iter_per_epoch": config.total_iter_per_epoch,
        "best_val_accuracy": curves[best_epoch][1] if curves else None,
        "best_val_epoch": best_epoch,
        "test_accuracy": test[0] if test else None,
        "pid": os.getpid() if pid is None else pid,
        "host": socket.gethostname() if host is None else host,
        "updated": "2024-05-01T12:00:00Z",
        "message": "",
    }
    (folder / "state.json").write_text(json.dumps(state, indent=2))
    if test is not None:
        summary = {
            "ensemble": {
                "accuracy_mean": test[0],
                "accuracy_ci95": test[1],
                "num_tasks": 600,
                "epochs": [best_epoch or 0],
            },
            "best_single": {
                "accuracy_mean": test[2],
                "accuracy_ci95": test[3],
                "num_tasks": 600,
                "epoch": best_epoch or 0,
            },
        }
        (folder / "test_summary.json").write_text(json.dumps(summary, indent=2))
    return folder


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
