"""Optuna behind one small interface: the only module of metasuite that imports it.

Optuna is an optional extra (``pip install -e .[tune]``, install.sh installs it), so it is
imported lazily, inside the functions here, and ``metasuite --help`` never loads it.

Why our own bookkeeping instead of Optuna's heartbeat and RetryFailedTrialCallback: a
retried trial gets a new number and starts from scratch, while a metasuite trial is an
experiment folder with checkpoints that resumes exactly. So a trial stays RUNNING in
the study until its experiment ends; a driver started again re-attaches the RUNNING
trials it owns (or whose owner is gone) under their own numbers, through
``optuna.trial.Trial(study, trial_id)``, and reports only epochs the study has not seen.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metasuite.errors import ConfigError, UserError
from metasuite.search.spec import Param, Search

if TYPE_CHECKING:
    pass

SETTINGS_ATTR = "metasuite_settings"
OWNER_ATTR = "metasuite_owner"
HEARTBEAT_ATTR = "metasuite_heartbeat"
STALE_AFTER_S = 300.0
"""A RUNNING trial of another host whose driver has not written a heartbeat for this
long is taken over (a driver on this host is checked by its pid instead)."""


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError(
            "metasuite tune needs Optuna: pip install optuna (or bash install.sh)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _build(cls: Any, settings: Mapping[str, Any], where: str) -> Any:
    """``cls(**settings)`` with unknown names and bad values as one-line config errors."""
    accepted = [
        n
        for n, p in inspect.signature(cls).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    for key in settings:
        if key not in accepted:
            import difflib

            close = difflib.get_close_matches(key, accepted, n=3, cutoff=0.6)
            hint = f" (closest: {', '.join(close)})" if close else ""
            raise ConfigError(f"{where}: unknown setting {key!r}{hint}")
    try:
        return cls(**settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def make_sampler(search: Search, trials_so_far: int = 0) -> Any:
    """The search file's sampler. Its seed is offset by the trials already in the study,
    so that a restarted driver does not draw the first trials' values again."""
    optuna = _optuna()
    settings = {k: v for k, v in search.sampler.items() if k != "kind"}
    if isinstance(settings.get("seed"), int):
        settings["seed"] = settings["seed"] + trials_so_far
    cls = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    return _build(cls[search.sampler["kind"]], settings, f"{search.path}: [sampler]")


def make_pruner(search: Search) -> Any:
    """The search file's pruner (``none``: Optuna's NopPruner)."""
    optuna = _optuna()
    settings = {k: v for k, v in search.pruner.items() if k != "kind"}
    cls = {
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "none": optuna.pruners.NopPruner,
    }
    return _build(cls[search.pruner["kind"]], settings, f"{search.path}: [pruner]")


def check(search: Search) -> None:
    """Build the sampler and pruner once, so that bad settings fail before anything runs."""
    make_sampler(search)
    make_pruner(search)


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``; anything that keeps it from opening is one line."""
    optuna = _optuna()
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # sqlalchemy's and the drivers' errors have no common base
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"storage {url}: cannot open it ({type(exc).__name__}: {first})") from None


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class TrialRow:
    """One trial for the report's table."""

    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    experiment: str
    best_epoch: int | None
    epochs_reported: int
    message: str = ""
    intermediate: dict[int, float] = field(default_factory=dict)


class Study:
    """The study of one search: ask, re-attach, report epochs, tell how trials ended."""

    def __init__(self, search: Search, storage_url: str | None = None) -> None:
        self.optuna = _optuna()
        self.search = search
        url = storage_url or search.storage
        storage = open_storage(url)
        self.study = self.optuna.create_study(
            study_name=search.study_name,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            pruner=make_pruner(search),
        )
        self.study.sampler = make_sampler(search, len(self.study.get_trials(deepcopy=False)))
        settings = search.settings()
        recorded = self.study.user_attrs.get(SETTINGS_ATTR)
        if recorded is None:
            self.study.set_user_attr(SETTINGS_ATTR, settings)
        elif json.dumps(recorded, sort_keys=True) != json.dumps(settings, sort_keys=True):
            raise UserError(
                f"{search.path}: the study {search.study_name!r} in {url} was started with "
                "another space or objective; give the search another study name "
                "(search.study) or storage"
            )
        self._heartbeat_at = 0.0

    # ----------------------------------------------------------------- reading
    def _frozen(self, number: int) -> Any:
        for t in self.study.get_trials(deepcopy=False):
            if t.number == number:
                return t
        raise KeyError(number)

    def count(self) -> int:
        """Every trial of the study, whatever its state: what --trials N counts."""
        return len(self.study.get_trials(deepcopy=False))

    def orphans(self) -> list[int]:
        """RUNNING trials no live driver holds: those this driver re-attaches."""
        mine = _owner()
        out = []
        running = self.optuna.trial.TrialState.RUNNING
        for t in self.study.get_trials(deepcopy=False, states=(running,)):
            owner = t.user_attrs.get(OWNER_ATTR) or {}
            if owner.get("host") == mine["host"]:
                if owner.get("pid") != mine["pid"] and _pid_alive(owner.get("pid")):
                    continue
            elif owner:
                beat = t.user_attrs.get(HEARTBEAT_ATTR)
                if isinstance(beat, int | float) and time.time() - beat < STALE_AFTER_S:
                    continue
            out.append(t.number)
        return sorted(out)

    def reported_steps(self, number: int) -> int:
        return len(self._frozen(number).intermediate_values)

    # ----------------------------------------------------------------- trials
    def _trial(self, number: int) -> Any:
        return self.optuna.trial.Trial(self.study, self._frozen(number)._trial_id)

    def _suggest(self, trial: Any, p: Param) -> Any:
        if p.type == "categorical":
            return trial.suggest_categorical(p.name, list(p.choices))
        if p.type == "int":
            return trial.suggest_int(p.name, p.low, p.high, step=p.step or 1, log=p.log)
        return trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)

    def claim(self, number: int | None = None) -> tuple[int, dict[str, Any]]:
        """A new trial (``number`` None) or a re-attached one, owned by this driver, with
        its values: those already recorded are kept, any missing (a driver killed while
        asking) are sampled now."""
        trial = self.study.ask() if number is None else self._trial(number)
        trial.set_user_attr(OWNER_ATTR, _owner())
        trial.set_user_attr(HEARTBEAT_ATTR, time.time())
        params = {p.name: self._suggest(trial, p) for p in self.search.space}
        return trial.number, params

    def set_attr(self, number: int, key: str, value: Any) -> None:
        self.study._storage.set_trial_user_attr(self._frozen(number)._trial_id, key, value)

    def heartbeat(self, numbers: Sequence[int], every_s: float = 30.0) -> None:
        """Mark this driver's trials as alive (for drivers on other hosts), now and then."""
        now = time.time()
        if now - self._heartbeat_at < every_s:
            return
        self._heartbeat_at = now
        for n in numbers:
            self.set_attr(n, HEARTBEAT_ATTR, now)

    def report(self, number: int, curve: Sequence[float]) -> bool:
        """Report the epochs of ``curve`` the study has not seen (step = epochs done,
        value = best validation accuracy so far); True when the pruner says stop."""
        trial = self._trial(number)
        seen = len(self._frozen(number).intermediate_values)
        if len(curve) <= seen:
            return False
        best = -math.inf
        for step, value in enumerate(curve, 1):
            best = max(best, value)
            if step > seen:
                trial.report(best, step)
        return bool(trial.should_prune())

    def tell(
        self, number: int, outcome: str, value: float | None = None, message: str = ""
    ) -> None:
        """End a trial: ``complete`` (with its value), ``pruned`` or ``fail``."""
        states = self.optuna.trial.TrialState
        if message:
            self.set_attr(number, "message", message[:2000])
        if outcome == "complete":
            self.study.tell(number, value, skip_if_finished=True)
        elif outcome == "pruned":
            self.study.tell(number, state=states.PRUNED, skip_if_finished=True)
        else:
            self.study.tell(number, state=states.FAIL, skip_if_finished=True)

    def rows(self) -> list[TrialRow]:
        out = []
        for t in self.study.get_trials(deepcopy=False):
            out.append(
                TrialRow(
                    number=t.number,
                    state=t.state.name.lower(),
                    params=dict(t.params),
                    value=t.value,
                    experiment=str(t.user_attrs.get("experiment", "")),
                    best_epoch=t.user_attrs.get("best_epoch"),
                    epochs_reported=len(t.intermediate_values),
                    message=str(t.user_attrs.get("message", "")),
                    intermediate={int(k): float(v) for k, v in t.intermediate_values.items()},
                )
            )
        return out

    def best(self, k: int) -> list[TrialRow]:
        """The ``k`` complete trials of highest value (ties: the earlier trial)."""
        done = [r for r in self.rows() if r.state == "complete" and r.value is not None]
        return sorted(done, key=lambda r: (-float(r.value or 0.0), r.number))[:k]

    # ----------------------------------------------------------------- plots
    def plots(self, folder: Path) -> dict[str, str]:
        """Optuna's matplotlib plots as PNG in ``folder``: file name → title, or, for a
        plot that cannot be drawn yet (too few trials), name → why (recorded in the report)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from metasuite.fsutil import make_dirs

        vis = self.optuna.visualization.matplotlib
        make_dirs(folder)
        made: dict[str, str] = {}
        for name, fn in (
            ("optimization_history.png", vis.plot_optimization_history),
            ("intermediate_values.png", vis.plot_intermediate_values),
            ("param_importances.png", vis.plot_param_importances),
        ):
            try:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ax = fn(self.study)
                figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                figure.set_size_inches(8, 5)
                figure.tight_layout()
                figure.savefig(folder / name, dpi=100)
                plt.close(figure)
                made[name] = "ok"
            except Exception as exc:  # too few trials, one parameter only, ...
                (folder / name).unlink(missing_ok=True)
                made[name] = f"not drawn: {type(exc).__name__}: {exc}".splitlines()[0]
                plt.close("all")
        return made
