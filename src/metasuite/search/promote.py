"""The best trials of a search → an ordinary multi-seed suite file.

The winners of a search are re-run over seeds and reported like any suite, so the
promoted file is a plain suite (:mod:`metasuite.suite.sweep`) beside the search file,
using the same templates: one zip axis ``best`` (rank, trial number and the tuned values
of each promoted trial) times a ``train_seed`` axis. Tuned config keys and
``train_seed`` reach the config through ``[suite] config_keys``, so any template works,
whether or not it has a variable for them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metasuite.search.engine import TrialRow
from metasuite.search.spec import TRIAL_VARIABLE, Search

SEED_KEY = "train_seed"


def _toml(value: Any) -> str:
    """A TOML value for strings, numbers, booleans and lists of them (JSON spells them
    the same way, floats such as 1e-05 included)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def promoted_suite(search: Search, best: Sequence[TrialRow], seeds: int, out: Path) -> str:
    """The text of the suite file ``out`` (beside the search file) for ``best`` x seeds."""
    suite = search.suite
    tuned = [p.name for p in search.space]
    config_keys = [*suite.config_keys, SEED_KEY]
    root = Path(os.path.relpath(search.root / "promoted", out.parent)).as_posix()
    stem = search.path.stem
    naming = f"{stem}_best{{{{ rank }}}}_t{{{{ {TRIAL_VARIABLE} }}}}_s{{{{ {SEED_KEY} }}}}"
    lines = [
        f"# The best {len(best)} trials of {search.path.name} (study {search.study_name!r}),",
        f"# each over train seeds 0..{seeds - 1}: written by `metasuite tune --promote`.",
        "#   metasuite generate --suite THIS && metasuite run-suite --suite THIS",
        "#   metasuite report --suite THIS",
        "",
        "[suite]",
        f"name = {_toml(f'best {len(best)} of {stem} x {seeds} seeds')}",
        f"root = {_toml(root)}",
        f"naming = {_toml(naming)}",
        f"config_template = {_toml(suite.config_template)}",
    ]
    if suite.script_template != "experiment.sh.j2":
        lines.append(f"script_template = {_toml(suite.script_template)}")
    lines += [f"config_keys = {_toml(config_keys)}", "", "[constants]"]
    for key, value in suite.constants.items():
        if key not in tuned and key != SEED_KEY:
            lines.append(f"{key} = {_toml(value)}")
    lines += ["", "[grid]"]
    group = {
        "rank": list(range(1, len(best) + 1)),
        TRIAL_VARIABLE: [r.number for r in best],
        **{name: [r.params[name] for r in best] for name in tuned},
    }
    inner = ", ".join(f"{k} = {_toml(v)}" for k, v in group.items())
    lines.append(f"best = {{ {inner} }}")
    lines.append(f"{SEED_KEY} = {_toml(list(range(seeds)))}")
    return "\n".join(lines) + "\n"
