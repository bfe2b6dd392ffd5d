"""A search file → a checked :class:`Search`: templates, space, objective, sampler, pruner.

A search file sits beside the suite files and uses the same templates::

    [search]
    root = "../experiments/tune_omniglot"   # configs, scripts and study.db go here
    naming = "tune_omniglot_t{{ trial }}"    # Jinja; ``trial`` is the trial number
    config_template = "omniglot.json.j2"
    trials = 8                               # default of --trials
    objective = "best_val_accuracy"          # or final_val_accuracy, test_accuracy
    storage = "sqlite:///..."                # default: sqlite:///<root>/study.db

    [constants]                              # template variables, as in a suite
    way = 5

    [space.init_inner_loop_learning_rate]    # a config key: set over the rendered config
    type = "float"
    low = 0.01
    high = 1.0
    log = true

    [space.inner_steps]                      # a constant: a template variable, sampled
    type = "int"
    low = 1
    high = 5

    [sampler]
    kind = "tpe"                             # or random
    seed = 0

    [pruner]
    kind = "median"                          # or successive_halving, none
    n_startup_trials = 2

Everything a user can get wrong is checked here, before a study is opened or a trial
started: one :class:`~metasuite.errors.ConfigError` line naming the file and the key.
Optuna is not imported here (:mod:`metasuite.search.engine` is the one module that does);
the engine checks the sampler's and pruner's settings against Optuna's own signatures.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metasuite.config import CONFIG_FIELDS, REPO_ROOT
from metasuite.errors import ConfigError
from metasuite.suite.sweep import DEFAULT_SCRIPT_TEMPLATE, Axis, Suite, read_toml

TRIAL_VARIABLE = "trial"
"""The template variable holding the trial number (in ``naming`` and the templates)."""
OBJECTIVES = {
    "best_val_accuracy": "validation accuracy at the best epoch (state.json)",
    "final_val_accuracy": "validation accuracy of the last trained epoch",
    "test_accuracy": "test accuracy of the ensemble of the best epochs (test_summary.json)",
}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "successive_halving", "none")
_SEARCH_KEYS = {
    "name": "a short description of the search",
    "root": "folder of the generated files and the study (relative to the search file)",
    "config_dir": "output folder of the trial configs, relative to root",
    "script_dir": "output folder of the trial scripts, relative to root",
    "naming": "Jinja pattern of a trial's experiment name (variable: trial)",
    "config_template": "Jinja pattern of the config template's file name",
    "script_template": "file name of the script template",
    "study": "study name in the storage",
    "storage": "Optuna storage URL",
    "trials": "number of trials in total (default of --trials)",
    "objective": f"one of {', '.join(OBJECTIVES)}",
}
_TOP_KEYS = ("search", "constants", "space", "sampler", "pruner")
_TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class Param:
    """One dimension of the space: a config key or a template variable (a constant)."""

    name: str
    type: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    template_variable: bool = False
    """True: a constant of the search file, substituted into the templates; False: a
    config key, set over the rendered config."""

    def describe(self) -> dict[str, Any]:
        """JSON-able definition (recorded in the study, compared on restart)."""
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Search:
    """A parsed search file; paths are absolute."""

    path: Path
    suite: Suite
    """The search as a suite with one axis, ``trial``: what the suite's renderer reads."""
    study_name: str
    storage: str
    trials: int | None
    objective: str
    space: tuple[Param, ...]
    sampler: Mapping[str, Any]
    pruner: Mapping[str, Any]
    description: str = ""

    @property
    def root(self) -> Path:
        return self.suite.root

    def settings(self) -> dict[str, Any]:
        """What a study is bound to: a restart with another space or objective is refused
        (the trials so far would not mean the same)."""
        return {
            "objective": self.objective,
            "space": {p.name: p.describe() for p in self.space},
        }


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=3, cutoff=0.6)
    return f" (closest: {', '.join(close)})" if close else ""


def _number(value: Any, where: str, *, integer: bool) -> float | int:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"{where} must be {kind}, got {json.dumps(value)}")
    return value


def _param(name: str, raw: Any, src: str, constants: Mapping[str, Any]) -> Param:
    where = f"{src}: space.{name}"
    if name == TRIAL_VARIABLE:
        raise ConfigError(f"{where}: {TRIAL_VARIABLE!r} is the trial number; choose another name")
    is_variable = name in constants
    if not is_variable and name not in CONFIG_FIELDS:
        options = [*CONFIG_FIELDS, *constants]
        raise ConfigError(
            f"{where}: {name!r} is neither a config key nor a constant of the search"
            f"{_suggest(name, options)}"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table (type = float|int|categorical, ...)")
    kind = raw.get("type")
    if kind not in _TYPES:
        raise ConfigError(f"{where}.type must be one of {', '.join(_TYPES)}, got {kind!r}")
    numeric = {"type", "low", "high", "log", "step"}
    allowed = {"type", "choices"} if kind == "categorical" else numeric
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown setting {key!r} for type {kind}"
                f"{_suggest(key, sorted(allowed))} (expected {', '.join(sorted(allowed))})"
            )
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices must be a non-empty list")
        for c in choices:
            if not isinstance(c, str | int | float | bool):
                raise ConfigError(f"{where}.choices: {c!r} is not a string, number or boolean")
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ConfigError(f"{where}.choices lists a value twice: {json.dumps(choices)}")
        return Param(name, kind, choices=tuple(choices), template_variable=is_variable)
    integer = kind == "int"
    for key in ("low", "high"):
        if key not in raw:
            raise ConfigError(f"{where}.{key} is missing")
    low = _number(raw["low"], f"{where}.low", integer=integer)
    high = _number(raw["high"], f"{where}.high", integer=integer)
    if low >= high:
        raise ConfigError(
            f"{where}: empty or inverted range low = {low}, high = {high} (need low < high)"
        )
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log must be true or false, got {json.dumps(log)}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log = true needs low > 0, got low = {low}")
    step = raw.get("step")
    if step is not None:
        step = _number(step, f"{where}.step", integer=integer)
        if step <= 0:
            raise ConfigError(f"{where}.step must be > 0, got {step}")
        if log:
            raise ConfigError(f"{where}: step and log = true cannot be combined (Optuna)")
    return Param(name, kind, low, high, log, step, template_variable=is_variable)


def _kind_table(raw: Any, src: str, table: str, kinds: tuple[str, ...], default: str) -> dict:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: [{table}] must be a table")
    out = dict(raw)
    kind = out.setdefault("kind", default)
    if kind not in kinds:
        raise ConfigError(
            f"{src}: {table}.kind {kind!r} is not a known {table}"
            f"{_suggest(str(kind), list(kinds))} (expected one of {', '.join(kinds)})"
        )
    return out


def load_search(path: str | Path) -> Search:
    """Read and check a search file (nothing is opened or written)."""
    path = Path(path).expanduser().resolve()
    src = str(path)
    raw = read_toml(path, "search file")
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"{src}: unknown table {key!r}{_suggest(key, list(_TOP_KEYS))} "
                f"(expected {', '.join(_TOP_KEYS)})"
            )
    head = raw.get("search")
    if not isinstance(head, dict):
        raise ConfigError(f"{src}: [search] table is missing")
    for key, value in head.items():
        if key not in _SEARCH_KEYS:
            raise ConfigError(f"{src}: unknown key search.{key}{_suggest(key, list(_SEARCH_KEYS))}")
        if key == "trials":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{src}: search.trials must be an integer >= 1, got {value!r}")
        elif not isinstance(value, str) or not value:
            raise ConfigError(
                f"{src}: search.{key} must be a non-empty string ({_SEARCH_KEYS[key]})"
            )
    if "config_template" not in head:
        raise ConfigError(f"{src}: search.config_template is missing")
    objective = head.get("objective", "best_val_accuracy")
    if objective not in OBJECTIVES:
        raise ConfigError(
            f"{src}: search.objective {objective!r} is not known"
            f"{_suggest(objective, list(OBJECTIVES))} (expected one of {', '.join(OBJECTIVES)})"
        )
    constants = raw.get("constants", {})
    if not isinstance(constants, dict):
        raise ConfigError(f"{src}: [constants] must be a table")
    if TRIAL_VARIABLE in constants:
        raise ConfigError(f"{src}: constants.{TRIAL_VARIABLE} is the trial number; rename it")
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise ConfigError(f"{src}: [space] is missing: give at least one [space.KEY] table")
    space = tuple(_param(k, v, src, constants) for k, v in space_raw.items())

    root = (path.parent / head["root"]).resolve() if "root" in head else REPO_ROOT
    naming = head.get("naming", f"{path.stem}_t{{{{ '%03d' | format({TRIAL_VARIABLE}) }}}}")
    if "{{" not in naming or TRIAL_VARIABLE not in naming:
        raise ConfigError(
            f"{src}: search.naming must use {{{{ {TRIAL_VARIABLE} }}}} (each trial is one "
            "experiment with its own name)"
        )
    suite = Suite(
        path=path,
        root=root,
        config_dir=root / head.get("config_dir", "experiment_config"),
        script_dir=root / head.get("script_dir", "experiment_scripts"),
        naming=naming,
        config_template=head["config_template"],
        script_template=head.get("script_template", DEFAULT_SCRIPT_TEMPLATE),
        constants=constants,
        axes=(Axis((TRIAL_VARIABLE,), ((0,),)),),
        exclude=(),
        description=head.get("name", ""),
        config_keys=tuple(p.name for p in space if not p.template_variable),
    )
    return Search(
        path=path,
        suite=suite,
        study_name=head.get("study", path.stem),
        storage=head.get("storage", default_storage(root)),
        trials=head.get("trials"),
        objective=objective,
        space=space,
        sampler=_kind_table(raw.get("sampler"), src, "sampler", SAMPLERS, "tpe"),
        pruner=_kind_table(raw.get("pruner"), src, "pruner", PRUNERS, "median"),
        description=head.get("name", ""),
    )


def default_storage(root: Path) -> str:
    """The study's SQLite file in the search's folder (one driver writes it)."""
    return f"sqlite:///{root / 'study.db'}"


def is_search_file(path: str | Path) -> bool:
    """True for a TOML file with a ``[search]`` table (status/report accept it as --suite)."""
    try:
        raw = read_toml(Path(path), "search file")
    except ConfigError:
        return False
    return isinstance(raw.get("search"), dict)
