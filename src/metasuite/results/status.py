"""Where each experiment of a suite stands, read from its folder without touching it.

The suite is the set of generated configs (``experiment_config/*.json``) plus any
experiment folder under the experiments root that no generated config names (an
experiment started by hand must not be invisible). Everything here only reads files the
builder writes atomically (docs/DESIGN.md), so it is safe to run while experiments train.

A ``state.json`` that says "running" is believed only when its process is alive on this
host: a killed job leaves "running" behind, and the researcher needs to see that it is
resumable, not that it is still busy.
"""

from __future__ import annotations

import csv
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from metasuite import jsontext
from metasuite.config import ExperimentConfig, load_config, training_differences
from metasuite.errors import ConfigError, UserError
from metasuite.selection import matches
from metasuite.text import plural, shown_epoch
from metasuite.training.experiment_dir import CONFIG_FILE, STATE_FILE
from metasuite.training.lock import pid_alive

# States shown to the user.
NOT_STARTED = "not started"
RUNNING = "running"
RUNNING_ELSEWHERE = "running (other host)"
PAUSED = "paused"
FAILED = "failed"
DONE = "done"
KILLED = "killed (resumable)"
KILLED_NO_CHECKPOINT = "killed (no checkpoint)"
INTERRUPTED = "interrupted (resumable)"
PRUNED = "pruned"
UNREADABLE = "unreadable"
INVALID_CONFIG = "invalid config"


@dataclass(frozen=True)
class SuiteExperiment:
    """One experiment of the suite: its name, its folder and where its config came from."""

    name: str
    folder: Path
    generated_config: Path | None
    """``experiment_config/<name>.json`` when the generator wrote one."""
    config_error: str | None = None
    """Why the generated config could not be read (the experiment is still listed)."""


def list_suite(
    root: Path, configs: Path | None, only: str | Sequence[str] | None = None
) -> list[SuiteExperiment]:
    """Generated configs in file-name order, then folders under ``root`` nobody generated.

    ``only``: patterns selecting experiment names, as for every command's ``--only``
    (:func:`metasuite.selection.matches`).
    """
    found: dict[str, SuiteExperiment] = {}
    if configs is not None and configs.is_dir():
        for path in sorted(configs.glob("*.json")):
            name, error = path.stem, None
            try:
                name = load_config(path).experiment_name
            except ConfigError as exc:
                error = str(exc)
            if name in found:
                # Two generated configs for one folder would overwrite each other's results.
                error = f"{path.name} and {found[name].generated_config} both name '{name}'"
            found[name] = SuiteExperiment(name, root / name, path, error)
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if folder.name not in found and looks_like_experiment(folder):
                found[folder.name] = SuiteExperiment(folder.name, folder, None)
    return [e for e in found.values() if matches(e.name, only)]


EXPERIMENT_MARKERS: tuple[str, ...] = (
    CONFIG_FILE,
    STATE_FILE,
    "manifest.json",
    "checkpoints",
    "logs",
)


def looks_like_experiment(folder: Path) -> bool:
    """A folder the builder wrote (not e.g. the report folder beside the experiments)."""
    return any((folder / marker).exists() for marker in EXPERIMENT_MARKERS)


def read_json(path: Path) -> Any:
    """Parsed JSON, ``None`` when the file does not exist; ``ValueError`` when corrupt."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return jsontext.loads(text)
    except jsontext.JsonTextError as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_summary_statistics(path: Path) -> list[dict[str, float]]:
    """Rows of ``summary_statistics.csv`` as numbers (empty list when absent).

    A cell that is empty or not a number becomes NaN (a NaN std of one value is
    legitimate; bytes that are not UTF-8 cannot be numbers either). A file whose shape
    is broken (no ``epoch`` column, a row with more or fewer cells than the header, an
    epoch that is not a whole number) raises ValueError naming the file and the line:
    the builder writes it atomically, so that is damage, not a run in progress.
    """
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            lines = list(reader)
    except FileNotFoundError:
        return []
    except csv.Error as exc:
        raise ValueError(f"{path}: corrupt ({exc})") from None
    if not header or "epoch" not in header:
        raise ValueError(f"{path}: corrupt (no 'epoch' column in its header line)")
    out = []
    for number, cells in enumerate(lines, start=2):
        if len(cells) != len(header):
            raise ValueError(
                f"{path}: corrupt (line {number} has {len(cells)} cells, the header {len(header)})"
            )
        parsed: dict[str, float] = {}
        for key, value in zip(header, cells, strict=True):
            try:
                parsed[key] = float(value)
            except ValueError:
                parsed[key] = float("nan")
        if not float(parsed["epoch"]).is_integer():
            epoch = cells[header.index("epoch")]
            raise ValueError(f"{path}: corrupt (line {number}: epoch {epoch!r})")
        out.append(parsed)
    return out


@dataclass(frozen=True)
class ExperimentStatus:
    """One line of ``metasuite status``."""

    name: str
    folder: Path
    state: str
    epoch: int | None = None
    total_epochs: int | None = None
    iteration: int | None = None
    total_iterations: int | None = None
    best_val_accuracy: float | None = None
    best_val_epoch: int | None = None
    test_accuracy: float | None = None
    updated: datetime | None = None
    world_size: int | None = None
    """Data-parallel processes (over all nodes) of the latest run; None before one."""
    detail: str = ""
    """Why the state is what it is (pid gone, message of a failure, ...)."""
    raw_state: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        return self.state == DONE


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _has_checkpoint(folder: Path) -> bool:
    ckpt = folder / "checkpoints"
    return ckpt.is_dir() and any(p.is_file() for p in ckpt.iterdir())


def config_drift(folder: Path, generated: ExperimentConfig | None) -> str:
    """Say so when the generated config no longer matches the one the run uses: a
    started run keeps its own ``config.json`` (a finished one is skipped by run-suite, a
    paused one refuses to resume on changed training settings), so ``generate`` over
    it changes nothing visibly unless it is said here. "" when they agree."""
    snapshot = folder / CONFIG_FILE
    if generated is None or not snapshot.is_file():
        return ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            used = load_config(snapshot)
    except UserError:
        return ""
    differences = training_differences(used, generated)
    if not differences:
        return ""
    shown = "; ".join(differences[:2]) + (
        f"; +{len(differences) - 2} more" if len(differences) > 2 else ""
    )
    return (
        f"generated config differs from this run's config.json ({shown}); the run keeps its "
        f"own (metasuite show {folder.name})"
    )


def read_status(
    experiment: SuiteExperiment, *, host: str | None = None, config: ExperimentConfig | None = None
) -> ExperimentStatus:
    """Classify one experiment from its ``state.json`` (and its process, when running)."""
    host = host or socket.gethostname()
    folder = experiment.folder
    totals: dict[str, Any] = {}
    if config is None and experiment.generated_config is not None and not experiment.config_error:
        try:
            config = load_config(experiment.generated_config)
        except UserError:
            config = None
    if config is not None:
        totals = {
            "total_epochs": config.total_epochs,
            "total_iterations": config.total_epochs * config.total_iter_per_epoch,
        }
    if experiment.config_error:
        return ExperimentStatus(
            experiment.name, folder, INVALID_CONFIG, detail=experiment.config_error
        )
    try:
        state = read_json(folder / STATE_FILE)
    except (ValueError, OSError) as exc:
        return ExperimentStatus(experiment.name, folder, UNREADABLE, detail=str(exc), **totals)
    if state is None:
        detail = "" if not folder.exists() else "folder exists but has no state.json yet"
        return ExperimentStatus(
            experiment.name, folder, NOT_STARTED, detail=detail, epoch=0, iteration=0, **totals
        )
    if not isinstance(state, dict):
        return ExperimentStatus(
            experiment.name, folder, UNREADABLE, detail=f"{folder / STATE_FILE}: not an object"
        )

    total_epochs = _int_or_none(state.get("total_epochs"))
    per_epoch = _int_or_none(state.get("total_iter_per_epoch"))
    total_iterations = (
        total_epochs * per_epoch if total_epochs is not None and per_epoch is not None else None
    )
    status = state.get("status")
    # A finished run's message repeats the test accuracy the table already shows.
    message = "" if status == "done" else state.get("message") or ""
    left_out = state.get("ensemble_left_out")
    if status == "done" and isinstance(left_out, list) and left_out:
        shown = [shown_epoch(e) if isinstance(e, int) else e for e in left_out]
        message = f"ensemble incomplete: epochs {shown} left out (damaged checkpoints)"
    pid = _int_or_none(state.get("pid"))
    state_host = state.get("host")
    detail = str(message)
    if status == "running":
        if state_host and state_host != host:
            label = RUNNING_ELSEWHERE
            detail = f"on {state_host}, pid {pid} (cannot check from {host})"
        elif pid is not None and pid_alive(pid):
            label = RUNNING
            detail = f"pid {pid}"
        else:
            label = KILLED if _has_checkpoint(folder) else KILLED_NO_CHECKPOINT
            detail = f"pid {pid} is gone; state.json still says running"
    else:
        label = {
            "done": DONE,
            "paused": PAUSED,
            "failed": FAILED,
            "interrupted": INTERRUPTED,
            "pruned": PRUNED,
        }.get(status, UNREADABLE)
        if label == UNREADABLE:
            detail = f"{folder / STATE_FILE}: unknown status {status!r}"
    drift = config_drift(folder, config)
    if drift:
        detail = f"{detail}; {drift}" if detail else drift
    return ExperimentStatus(
        name=experiment.name,
        folder=folder,
        state=label,
        epoch=_int_or_none(state.get("epoch")),
        total_epochs=total_epochs,
        iteration=_int_or_none(state.get("iteration")),
        total_iterations=total_iterations,
        best_val_accuracy=_float_or_none(state.get("best_val_accuracy")),
        best_val_epoch=_int_or_none(state.get("best_val_epoch")),
        test_accuracy=_float_or_none(state.get("test_accuracy")),
        updated=parse_time(state.get("updated")),
        world_size=_int_or_none(state.get("world_size")),
        detail=detail,
        raw_state=state,
    )


def percent(value: float | None, digits: int = 2) -> str:
    """Accuracies are stored as fractions in [0, 1]; people read percentages."""
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _of(done: int | None, total: int | None) -> str:
    if done is None and total is None:
        return "-"
    return f"{'-' if done is None else done}/{'?' if total is None else total}"


def _age(updated: datetime | None, now: datetime) -> str:
    if updated is None:
        return "-"
    seconds = max(0, int((now - updated).total_seconds()))
    if seconds < 90:
        ago = f"{seconds}s"
    elif seconds < 90 * 60:
        ago = f"{seconds // 60}m"
    elif seconds < 48 * 3600:
        ago = f"{seconds // 3600}h"
    else:
        ago = f"{seconds // 86400}d"
    return f"{updated.astimezone().strftime('%Y-%m-%d %H:%M')} ({ago} ago)"


def format_status_table(statuses: list[ExperimentStatus], now: datetime | None = None) -> str:
    """A fixed-width table, one line per experiment, then a count per state."""
    now = now or datetime.now(UTC)
    header = (
        "experiment", "state", "epoch", "iteration", "ranks", "best val", "test", "updated", "",
    )  # fmt: skip
    rows = [header]
    for s in statuses:
        best = percent(s.best_val_accuracy)
        if s.best_val_accuracy is not None and s.best_val_epoch is not None:
            best += f" @{shown_epoch(s.best_val_epoch)}"  # 1-based, as the log counts
        rows.append(
            (
                s.name,
                s.state,
                _of(s.epoch, s.total_epochs),
                _of(s.iteration, s.total_iterations),
                "-" if s.world_size is None else str(s.world_size),
                best,
                percent(s.test_accuracy) if s.state == DONE else "-",
                _age(s.updated, now),
                s.detail,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items())
    lines.append(f"{plural(len(statuses), 'experiment')}: {summary or 'none'}")
    return "\n".join(line.rstrip() for line in lines) + "\n"
