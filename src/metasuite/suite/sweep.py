"""A suite file → the ordered list of its experiments, each one a validated config.

A suite (``suite.toml``, read with :mod:`tomllib`) names config templates and a grid::

    [suite]
    root = ".."                      # where experiment_config/ and experiment_scripts/ go
    naming = "{{dataset}}_{{method}}_{{way}}way_{{shot}}shot_s{{seed}}"
    config_template = "{{dataset}}.json.j2"

    [constants]                      # the same for every experiment
    total_epochs = 100

    [grid]                           # axes of the product, first one varies slowest
    dataset = ["omniglot", "mini_imagenet"]
    method = { method = ["maml", "maml++"], plus_plus = [false, true] }   # a zip group
    way = [5, 20]

    [[exclude]]                      # combinations to leave out (a list means any of)
    dataset = "mini_imagenet"
    way = 20

Like Hydra's basic sweeper, the expansion is an explicit ordered product and every
expansion is rendered and validated through :func:`metasuite.config.from_dict` before a
single file is written: one bad combination stops the whole generation with an error
naming the template, the grid values and the config field, instead of leaving a
half-written suite behind.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
import tomllib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from metasuite import jsontext
from metasuite.config import (
    CONFIG_FIELDS,
    EXPERIMENT_NAME_RULE,
    REPO_ROOT,
    ExperimentConfig,
    from_dict,
    is_experiment_name,
)
from metasuite.errors import ConfigError
from metasuite.selection import matches
from metasuite.suite.render import PACKAGE_TEMPLATES, make_environment, render_file, render_string
from metasuite.suite.slurm_settings import SlurmSettings, from_table
from metasuite.text import plural

DEFAULT_SUITE = REPO_ROOT / "experiment_template_config" / "suite.toml"
DEFAULT_SCRIPT_TEMPLATE = "experiment.sh.j2"
RESERVED_NAMES = frozenset({"experiment_name", "name", "values", "config"})
"""Variables the generator sets itself; a grid or constant of that name would be shadowed."""

_SUITE_KEYS = {
    "name": "a short description of the suite",
    "root": "folder the output folders are relative to (relative to the suite file)",
    "config_dir": "output folder of the configs, relative to root",
    "script_dir": "output folder of the scripts, relative to root",
    "naming": "Jinja pattern of the experiment name",
    "config_template": "Jinja pattern of the config template's file name",
    "script_template": "file name of the script template",
    "config_keys": "list of variables (grid or constants) set as config keys over the template",
}
_TOP_KEYS = ("suite", "constants", "grid", "exclude", "slurm")
_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Scalar = str | int | float | bool

MAX_COMBINATIONS = 100_000
"""The largest grid a suite may span, counted (a product of axis lengths) before
anything is expanded: every combination becomes a config and a script, and all are
rendered and validated before one is written, so a typo'd grid of 10^8 would fill
memory, not the disk."""


@dataclass(frozen=True)
class Axis:
    """One axis of the product: a single variable, or a zip group moving together."""

    keys: tuple[str, ...]
    rows: tuple[tuple[Scalar, ...], ...]


@dataclass(frozen=True)
class Suite:
    """A parsed suite file; paths are absolute."""

    path: Path
    root: Path
    config_dir: Path
    script_dir: Path
    naming: str
    config_template: str
    script_template: str
    constants: Mapping[str, Any]
    axes: tuple[Axis, ...]
    exclude: tuple[Mapping[str, tuple[Scalar, ...]], ...]
    description: str = ""
    slurm: SlurmSettings | None = None
    """The ``[slurm]`` table (metasuite.suite.slurm_settings); None: no sbatch files."""
    config_keys: tuple[str, ...] = ()
    """``[suite] config_keys``: variables that are also config keys, set over the rendered
    template (a promoted search's tuned values reach any template this way)."""

    @property
    def variables(self) -> tuple[str, ...]:
        """Grid variables in product order."""
        return tuple(k for axis in self.axes for k in axis.keys)

    @property
    def template_dirs(self) -> tuple[Path, ...]:
        """Where templates are looked up: the suite's folder first, then metasuite's own."""
        return (self.path.parent, PACKAGE_TEMPLATES)

    def environment(self) -> jinja2.Environment:
        return make_environment(self.template_dirs)


@dataclass(frozen=True)
class Experiment:
    """One expansion of the grid: its name, grid values and validated config."""

    name: str
    values: Mapping[str, Scalar]
    template: str
    config: ExperimentConfig
    config_path: Path
    script_path: Path
    warnings: tuple[str, ...] = field(default=(), compare=False)


# ---------------------------------------------------------------------------- parsing


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _check_var(name: str, where: str) -> None:
    if not _VAR_RE.fullmatch(name):
        raise ConfigError(f"{where}: {name!r} is not a usable variable name (letters, digits, _)")
    if name in RESERVED_NAMES:
        raise ConfigError(f"{where}: {name!r} is set by the generator; choose another name")


def _axis_values(values: Any, where: str, *, unique: bool = True) -> tuple[Scalar, ...]:
    """An axis' values; ``unique=False`` for a column of a zip group, where only whole
    rows must differ (two promoted trials may share an inner step count)."""
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where} must be a non-empty list of values, got {json.dumps(values)}")
    for v in values:
        if not _is_scalar(v):
            raise ConfigError(f"{where}: values must be strings, numbers or booleans, got {v!r}")
    if unique and len(set(map(_value_key, values))) != len(values):
        raise ConfigError(f"{where} lists a value twice: {json.dumps(values)}")
    return tuple(values)


def _value_key(v: Scalar) -> tuple[str, Scalar]:
    """Equality that keeps true apart from 1 (TOML keeps them apart, Python does not)."""
    return ("bool" if isinstance(v, bool) else "num" if isinstance(v, int | float) else "str", v)


def _parse_grid(grid: Any, src: str) -> tuple[Axis, ...]:
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{src}: [grid] must be a table of lists (the axes of the product)")
    axes: list[Axis] = []
    for key, value in grid.items():
        where = f"{src}: grid.{key}"
        if isinstance(value, dict):  # a zip group: lists of one length moving together
            if not value:
                raise ConfigError(f"{where}: a zip group needs at least one list")
            columns = []
            for sub, sub_values in value.items():
                _check_var(sub, f"{where}.{sub}")
                columns.append(_axis_values(sub_values, f"{where}.{sub}", unique=False))
            lengths = {len(c) for c in columns}
            if len(lengths) != 1:
                sizes = ", ".join(f"{k}: {len(c)}" for k, c in zip(value, columns, strict=True))
                raise ConfigError(
                    f"{where}: the lists of a zip group must have one length ({sizes})"
                )
            rows = tuple(zip(*columns, strict=True))
            if len({tuple(map(_value_key, row)) for row in rows}) != len(rows):
                raise ConfigError(f"{where}: the zip group holds the same row twice")
            axes.append(Axis(tuple(value), rows))
        else:
            _check_var(key, where)
            axes.append(Axis((key,), tuple((v,) for v in _axis_values(value, where))))
    seen: set[str] = set()
    for axis in axes:
        for k in axis.keys:
            if k in seen:
                raise ConfigError(f"{src}: grid variable {k!r} is given twice")
            seen.add(k)
    size = math.prod(len(axis.rows) for axis in axes)
    if size > MAX_COMBINATIONS:
        shape = " x ".join(f"{len(a.rows)} {'/'.join(a.keys)}" for a in axes)
        raise ConfigError(
            f"{src}: [grid] has {size:,} combinations ({shape}) before exclusions; at most "
            f"{MAX_COMBINATIONS:,} (each is a config and a script); split the suite"
        )
    return tuple(axes)


def _parse_exclude(raw: Any, variables: Sequence[str], src: str) -> tuple[dict, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{src}: exclude must be an array of tables ([[exclude]])")
    out = []
    for i, entry in enumerate(raw, 1):
        where = f"{src}: exclude #{i}"
        if not isinstance(entry, dict) or not entry:
            raise ConfigError(f"{where} must be a table of grid variable = value(s)")
        rule: dict[str, tuple[Scalar, ...]] = {}
        for key, value in entry.items():
            if key not in variables:
                raise ConfigError(
                    f"{where}: {key!r} is not a grid variable{_suggest(key, variables)} "
                    f"(grid variables: {', '.join(variables)})"
                )
            options = tuple(value) if isinstance(value, list) else (value,)
            if not options or not all(_is_scalar(v) for v in options):
                raise ConfigError(
                    f"{where}: {key} must be a value or a non-empty list of values "
                    f"(strings, numbers or booleans), got {json.dumps(value)}"
                )
            rule[key] = options
        out.append(rule)
    return tuple(out)


def _suggest(key: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's tables, every failure one ConfigError naming the file and ``what``
    it is (the suite and search files share this reader)."""
    src = str(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{src}: {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"{src}: cannot read {what} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{src}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{src}: not valid TOML ({exc})") from None
    except RecursionError:  # tomllib parses nested arrays recursively
        raise ConfigError(f"{src}: arrays or tables nested too deeply to read") from None


def load_suite(path: str | Path | None = None, root: str | Path | None = None) -> Suite:
    """Read and check a suite file; ``root`` overrides the suite's output root."""
    path = Path(path) if path is not None else DEFAULT_SUITE
    path = path.expanduser().resolve()
    src = str(path)
    raw = read_toml(path, "suite file")
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"{src}: unknown table {key!r}{_suggest(key, _TOP_KEYS)} "
                f"(expected {', '.join(_TOP_KEYS)})"
            )
    head = raw.get("suite", {})
    if not isinstance(head, dict):
        raise ConfigError(f"{src}: [suite] must be a table")
    for key, value in head.items():
        if key not in _SUITE_KEYS:
            raise ConfigError(f"{src}: unknown key suite.{key}{_suggest(key, list(_SUITE_KEYS))}")
        if key == "config_keys":
            continue  # checked below, once the variables are known
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{src}: suite.{key} must be a non-empty string ({_SUITE_KEYS[key]})")
    for key in ("naming", "config_template"):
        if key not in head:
            raise ConfigError(f"{src}: suite.{key} is missing ({_SUITE_KEYS[key]})")

    if root is not None:
        out_root = Path(root).expanduser().resolve()
    elif "root" in head:
        out_root = (path.parent / head["root"]).resolve()
    else:
        out_root = REPO_ROOT
    constants = raw.get("constants", {})
    if not isinstance(constants, dict):
        raise ConfigError(f"{src}: [constants] must be a table")
    for key in constants:
        _check_var(key, f"{src}: constants.{key}")
    axes = _parse_grid(raw.get("grid"), src)
    variables = [k for axis in axes for k in axis.keys]
    for key in variables:
        if key in constants:
            raise ConfigError(f"{src}: {key!r} is both a constant and a grid variable")
    config_keys = _parse_config_keys(head.get("config_keys", []), [*variables, *constants], src)
    slurm = None
    if "slurm" in raw:
        slurm = from_table(raw["slurm"], src)
    return Suite(
        path=path,
        root=out_root,
        config_dir=out_root / head.get("config_dir", "experiment_config"),
        script_dir=out_root / head.get("script_dir", "experiment_scripts"),
        naming=head["naming"],
        config_template=head["config_template"],
        script_template=head.get("script_template", DEFAULT_SCRIPT_TEMPLATE),
        constants=constants,
        axes=axes,
        exclude=_parse_exclude(raw.get("exclude"), variables, src),
        description=head.get("name", ""),
        slurm=slurm,
        config_keys=config_keys,
    )


def _parse_config_keys(raw: Any, variables: Sequence[str], src: str) -> tuple[str, ...]:
    """``[suite] config_keys``: config keys that are also grid variables or constants."""
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise ConfigError(f"{src}: suite.config_keys must be a list of config key names")
    for key in raw:
        if key not in CONFIG_FIELDS:
            raise ConfigError(
                f"{src}: suite.config_keys: {key!r} is not a config key"
                f"{_suggest(key, CONFIG_FIELDS)}"
            )
        if key not in variables:
            raise ConfigError(
                f"{src}: suite.config_keys: {key!r} is neither a grid variable nor a constant"
            )
    return tuple(dict.fromkeys(raw))


# -------------------------------------------------------------------------- expansion


def _matches(rule: Mapping[str, tuple[Scalar, ...]], values: Mapping[str, Scalar]) -> bool:
    return all(
        _value_key(values[k]) in {_value_key(o) for o in options} for k, options in rule.items()
    )


def combinations(suite: Suite) -> list[dict[str, Scalar]]:
    """The grid's combinations in product order, exclusions removed.

    An exclusion that removes nothing is an error: it is almost always a typo
    (``way = "20"`` for ``way = 20``) that would otherwise silently keep experiments.
    """
    out = []
    used = [False] * len(suite.exclude)
    for rows in itertools.product(*(axis.rows for axis in suite.axes)):
        values: dict[str, Scalar] = {}
        for axis, row in zip(suite.axes, rows, strict=True):
            values.update(zip(axis.keys, row, strict=True))
        hit = [_matches(rule, values) for rule in suite.exclude]
        for i, h in enumerate(hit):
            used[i] = used[i] or h
        if not any(hit):
            out.append(values)
    for i, was_used in enumerate(used):
        if not was_used:
            rule = {k: list(v) if len(v) > 1 else v[0] for k, v in suite.exclude[i].items()}
            raise ConfigError(
                f"{suite.path}: exclude #{i + 1} ({json.dumps(rule)}) matches no combination "
                "of the grid (check its values and their types)"
            )
    return out


def describe(values: Mapping[str, Scalar]) -> str:
    """``dataset='omniglot', way=5``: how errors name a combination."""
    return ", ".join(f"{k}={v!r}" for k, v in values.items())


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _expand_one(suite: Suite, env: jinja2.Environment, values: dict[str, Scalar]) -> Experiment:
    context: dict[str, Any] = {**suite.constants, **values}
    combo = describe(values)
    name = render_string(env, suite.naming, context, f"{suite.path}: suite.naming with {combo}")
    if not is_experiment_name(name):
        raise ConfigError(
            f"{suite.path}: suite.naming gives {name!r} for {combo}; experiment names must be "
            f"{EXPERIMENT_NAME_RULE}"
        )
    template = render_string(
        env, suite.config_template, context, f"{suite.path}: suite.config_template with {combo}"
    )
    text = render_file(env, template, {**context, "experiment_name": name}, f"with {combo}")
    template_path = _display(suite.path.parent / template, suite.root)
    source = f"{template_path} with {combo}"
    try:
        raw = jsontext.loads(text)
    except jsontext.JsonTextError as exc:
        lines = text.splitlines()
        bad = lines[exc.lineno - 1] if exc.lineno and exc.lineno <= len(lines) else ""
        raise ConfigError(
            f"{source}: rendered config is {exc}" + (f": {bad.strip()!r}" if bad else "")
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the template must render a JSON object")
    if raw.setdefault("experiment_name", name) != name:
        raise ConfigError(
            f"{source}: experiment_name is {raw['experiment_name']!r} but suite.naming gives "
            f"{name!r}; use {{{{ experiment_name | tojson }}}} in the template"
        )
    for key in suite.config_keys:  # set over the template, as the suite file asks
        raw[key] = context[key]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = from_dict(raw, source=source)
    return Experiment(
        name=name,
        values=values,
        template=template,
        config=config,
        config_path=suite.config_dir / f"{name}.json",
        script_path=suite.script_dir / f"{name}.sh",
        # Warnings name the template only, so that generate prints each once, not per seed.
        warnings=tuple(str(w.message).replace(source, template_path) for w in caught),
    )


def expand_one(suite: Suite, values: dict[str, Scalar]) -> Experiment:
    """The one experiment of ``values`` (template variables over the constants), not
    necessarily a combination of the grid: how a search (:mod:`metasuite.search`)
    renders a trial with the suite's own templates and checks."""
    return _expand_one(suite, suite.environment(), values)


def expand(suite: Suite, only: Sequence[str] = ()) -> list[Experiment]:
    """Render and validate every combination; keep those whose name matches ``only``
    (:func:`metasuite.selection.matches`: shell patterns, a plain word as a substring).

    All combinations are validated even when ``only`` selects a few, so a partial
    generation cannot hide a broken template. The first error is raised, with a count
    of how many other combinations also fail.
    """
    env = suite.environment()
    experiments: list[Experiment] = []
    errors: list[ConfigError] = []
    for values in combinations(suite):
        try:
            experiments.append(_expand_one(suite, env, values))
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        more = f" (and {len(errors) - 1} more combinations fail)" if len(errors) > 1 else ""
        raise ConfigError(f"{errors[0]}{more}")
    by_name: dict[str, Experiment] = {}
    for exp in experiments:
        if exp.name in by_name:
            raise ConfigError(
                f"{suite.path}: suite.naming gives the same name {exp.name!r} to "
                f"({describe(by_name[exp.name].values)}) and ({describe(exp.values)}); "
                "put the differing variables in the pattern"
            )
        by_name[exp.name] = exp
    if only:
        experiments = [e for e in experiments if matches(e.name, only)]
        if not experiments:
            raise ConfigError(
                f"--only {' '.join(only)} matches none of the "
                f"{plural(len(by_name), 'experiment')} of {suite.path}"
            )
    return experiments
