"""The experiment folder: where each output lives and how it is written.

Layout and file formats are the contract in docs/DESIGN.md ("Experiment folder");
``status`` and ``report`` read what is written here. Every file is replaced atomically,
so a reader (or a resumed run) never sees half a file, and the summary CSV is rewritten
in full from the checkpointed statistics rather than appended to: after a crash it
cannot hold a row that the checkpoint it resumes from does not know about.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from metasuite import jsontext
from metasuite.config import REPO_ROOT, ExperimentConfig, save_config
from metasuite.errors import UserError
from metasuite.fsutil import write_text_atomic

Status = Literal["running", "paused", "done", "failed", "interrupted", "pruned"]

EXPERIMENTS_ROOT_ENV = "METASUITE_EXPERIMENTS_ROOT"
"""Where experiment folders live when no ``--experiments-root`` is given; ``run-suite``
and ``submit`` also pass it to the scripts they start, so the jobs write where asked."""

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
SUMMARY_FILE = "summary_statistics.csv"
TEST_SUMMARY_FILE = "test_summary.json"
LIVE_PROGRESS_FILE = "live_progress.json"
METRICS_FILE = "logs/metrics.jsonl"
"""The metrics log (:mod:`metasuite.training.metrics`), relative to the experiment folder."""
TENSORBOARD_DIR = "tensorboard"
"""The experiment's TensorBoard run (event files), relative to the experiment folder."""
END_REQUEST_FILE = "end_request.json"
"""Written by someone watching the experiment (``metasuite tune``'s driver) to ask it to
end at its next epoch end; the builder only reads it, so no search code lives there."""

SUMMARY_COLUMNS: tuple[str, ...] = (
    "epoch",
    "train_loss_mean",
    "train_loss_std",
    "train_accuracy_mean",
    "train_accuracy_std",
    "val_loss_mean",
    "val_loss_std",
    "val_accuracy_mean",
    "val_accuracy_std",
    "learning_rate",
    "epoch_time_s",
)


def experiments_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit`` (``--experiments-root``), else ``$METASUITE_EXPERIMENTS_ROOT``, else
    ``<repo>/experiments``: one rule for every command, so that ``train``, ``run-suite``,
    ``status`` and ``report`` never look in different places."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(EXPERIMENTS_ROOT_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "experiments"


def utc_now() -> str:
    """Now as ISO 8601 UTC to the second, the time stamp of every file metasuite writes."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _json_number(value: float | None) -> float | None:
    """JSON has no NaN; an undefined number is written as null."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


@dataclass(frozen=True)
class ExperimentDir:
    """Paths of one experiment: ``<root>/<experiment_name>/``."""

    path: Path

    @classmethod
    def for_config(cls, root: Path, config: ExperimentConfig) -> ExperimentDir:
        return cls(Path(root) / config.experiment_name)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs / "train.log"

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    @property
    def live_progress_path(self) -> Path:
        return self.logs / LIVE_PROGRESS_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def test_summary_path(self) -> Path:
        return self.path / TEST_SUMMARY_FILE

    def create(self) -> None:
        """Make the folders; a file in the way (or no permission) is a one-line error."""
        for folder in (self.path, self.checkpoints, self.logs):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(
                    f"experiment folder {folder}: cannot create it ({exc.strerror or exc}); "
                    "is a file in the way?"
                ) from None

    # ---------------------------------------------------------------- config
    def write_config(self, config: ExperimentConfig) -> None:
        save_config(config, self.config_path)

    # ---------------------------------------------------------------- state
    def read_state(self) -> dict[str, Any] | None:
        """``state.json``, or None when absent, unreadable or not a JSON object.

        It is written atomically, so it is never half written; ``metasuite status``
        reads it with :func:`metasuite.results.status.read_json` to say *why* it is unreadable.
        """
        try:
            state = jsontext.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def write_state(
        self,
        status: Status,
        *,
        config: ExperimentConfig,
        epoch: int,
        iteration: int,
        best_val_accuracy: float | None,
        best_val_epoch: int | None,
        test_accuracy: float | None = None,
        message: str = "",
        world_size: int = 1,
        ensemble_left_out: list[int] | None = None,
    ) -> None:
        state = {
            "status": status,
            "epoch": epoch,
            "iteration": iteration,
            "total_epochs": config.total_epochs,
            "total_iter_per_epoch": config.total_iter_per_epoch,
            "best_val_accuracy": _json_number(best_val_accuracy),
            "best_val_epoch": best_val_epoch,
            "test_accuracy": _json_number(test_accuracy),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            # Data-parallel processes of the run (all nodes); rank 0 writes this file.
            "world_size": world_size,
            "updated": utc_now(),
            "message": message,
        }
        if ensemble_left_out:  # epochs the test ensemble should have held but could not
            state["ensemble_left_out"] = list(ensemble_left_out)
        write_text_atomic(self.state_path, json.dumps(state, indent=2) + "\n")

    # ---------------------------------------------------------------- end request
    @property
    def end_request_path(self) -> Path:
        return self.path / END_REQUEST_FILE

    def request_end(self, reason: str) -> None:
        """Ask the experiment to end at its next epoch end (atomic; idempotent)."""
        payload = {"reason": reason, "requested": utc_now()}
        write_text_atomic(self.end_request_path, json.dumps(payload) + "\n")

    def end_requested(self) -> str | None:
        """The reason of a pending end request, or None. A request file that cannot be
        read still counts (its writer meant it): the reason then says so."""
        try:
            text = self.end_request_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"end requested ({self.end_request_path}: {exc.strerror or exc})"
        try:
            reason = jsontext.loads(text).get("reason")
        except (ValueError, AttributeError):
            reason = None
        return str(reason) if reason else "end requested"

    # ---------------------------------------------------------------- live progress
    def write_live_progress(self, iteration: int) -> None:
        """The meta-iteration reached, written between checkpoints (a few times a minute)
        so that a watcher such as quickstart's progress bar moves with training instead
        of jumping at each checkpoint. Not a checkpoint: a resumed run starts from the
        checkpoint ``state.json`` names, whatever this file says."""
        payload = {"iteration": iteration, "pid": os.getpid(), "updated": utc_now()}
        write_text_atomic(self.live_progress_path, json.dumps(payload) + "\n")

    def read_live_iteration(self) -> int | None:
        """The iteration in ``logs/live_progress.json``, or None when absent or unreadable."""
        try:
            value = jsontext.loads(self.live_progress_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        iteration = value.get("iteration") if isinstance(value, dict) else None
        return iteration if isinstance(iteration, int) else None

    # ---------------------------------------------------------------- summary CSV
    def write_summary(self, rows: list[dict[str, float]]) -> None:
        """Rewrite ``summary_statistics.csv`` from all epoch rows so far.

        Floats are written with ``repr`` (shortest exact form), so equal rows from an
        interrupted and an uninterrupted run are equal as text too.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(SUMMARY_COLUMNS)
        for row in rows:
            writer.writerow([_csv_value(row[c]) for c in SUMMARY_COLUMNS])
        write_text_atomic(self.summary_path, buffer.getvalue())

    def read_summary(self) -> list[dict[str, str]]:
        if not self.summary_path.exists():
            return []
        with self.summary_path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    # ---------------------------------------------------------------- test summary
    def write_test_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.test_summary_path, json.dumps(summary, indent=2) + "\n")

    def read_test_summary(self) -> dict[str, Any] | None:
        try:
            return jsontext.loads(self.test_summary_path.read_text())
        except (OSError, ValueError):
            return None


def _csv_value(value: float | int) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


__all__ = [
    "CONFIG_FILE",
    "EXPERIMENTS_ROOT_ENV",
    "METRICS_FILE",
    "STATE_FILE",
    "SUMMARY_COLUMNS",
    "SUMMARY_FILE",
    "TENSORBOARD_DIR",
    "TEST_SUMMARY_FILE",
    "ExperimentDir",
    "Status",
    "experiments_root",
    "utc_now",
]
