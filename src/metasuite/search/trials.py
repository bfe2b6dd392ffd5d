"""A trial as an ordinary experiment: rendered with the suite's templates, read back from
its folder.

A trial's config and script are written exactly as ``metasuite generate`` writes a
suite's (:mod:`metasuite.suite.files`), so ``run-suite``'s pool runs them, ``status`` and
``report`` read them, and a trial's script can be run by hand. What the driver needs
back (the per-epoch validation curve, the objective, how the run ended) is read from
the experiment folder the builder writes; nothing here imports Optuna.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metasuite.search.spec import TRIAL_VARIABLE, Search
from metasuite.suite.files import config_file, script_file
from metasuite.suite.sweep import Experiment, expand_one
from metasuite.training.experiment_dir import SUMMARY_FILE, ExperimentDir


def render_trial(search: Search, number: int, params: Mapping[str, Any]) -> Experiment:
    """The validated experiment of trial ``number`` with the sampled ``params``.

    Every sampled value is a template variable; those that are config keys are also set
    over the rendered config (the search's suite lists them in ``config_keys``). Raises
    ConfigError when the values make an invalid config (the driver fails that trial and
    goes on).
    """
    return expand_one(search.suite, {TRIAL_VARIABLE: number, **params})


def write_trial(search: Search, exp: Experiment) -> None:
    """Write the trial's config and script (atomically; unchanged files are left alone)."""
    for f in (config_file(exp), script_file(search.suite, exp)):
        if f.status() != "unchanged":
            f.write()


def validation_curve(folder: Path) -> list[float]:
    """Validation accuracy of each completed epoch, in order, from summary_statistics.csv
    (rewritten atomically by the builder at each epoch end). Unreadable → the epochs read."""
    values: list[float] = []
    try:
        with (folder / SUMMARY_FILE).open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                try:
                    values.append(float(row["val_accuracy_mean"]))
                except (KeyError, TypeError, ValueError):
                    break
    except OSError:
        return []
    return values


@dataclass(frozen=True)
class Ending:
    """How a trial's experiment stands: its state and, when finished, its objective."""

    status: str | None  # state.json status, None without one
    value: float | None
    message: str = ""
    best_epoch: int | None = None


def objective_value(search: Search, folder: Path) -> float | None:
    """The search's objective read from a finished experiment folder (None if missing)."""
    exp = ExperimentDir(folder)
    if search.objective == "test_accuracy":
        summary = exp.read_test_summary() or {}
        value = (summary.get("ensemble") or {}).get("accuracy_mean")
    elif search.objective == "final_val_accuracy":
        curve = validation_curve(folder)
        value = curve[-1] if curve else None
    else:
        value = (exp.read_state() or {}).get("best_val_accuracy")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def ending(search: Search, folder: Path) -> Ending:
    """Read the trial's state: done (with its objective), pruned, failed, or not ended."""
    state = ExperimentDir(folder).read_state()
    if state is None:
        return Ending(None, None)
    status = state.get("status")
    best = state.get("best_val_epoch")
    best_epoch = best if isinstance(best, int) else None
    message = str(state.get("message") or "")
    value = objective_value(search, folder) if status == "done" else None
    return Ending(str(status), value, message, best_epoch)
