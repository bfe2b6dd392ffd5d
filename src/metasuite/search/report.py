"""A search's section of ``metasuite report``: the trials table and Optuna's plots.

``metasuite report --suite SEARCH.toml`` reports the trials as experiments (each trial
its own group: its config differs from the others') and adds this section: every trial
with its values, state, best epoch and objective (``search/trials.md`` and
``search/trials.csv``), and the optimisation history, the intermediate values (the
curves the pruner saw) and the parameter importances as PNG (``search/*.png``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from metasuite.fsutil import write_text_atomic
from metasuite.search.engine import Study, TrialRow
from metasuite.search.spec import Search
from metasuite.text import shown_epoch

FOLDER = "search"


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def trials_table(search: Search, rows: list[TrialRow]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the trials table: one row per trial, by number."""
    names = [p.name for p in search.space]
    header = ["trial", "state", *names, search.objective, "best_epoch", "epochs", "experiment"]
    body = []
    for r in rows:
        best = r.best_epoch
        body.append(
            [
                str(r.number),
                r.state,
                *(_value(r.params.get(n)) for n in names),
                "-" if r.value is None else f"{r.value:.4f}",
                "-" if not isinstance(best, int) else str(shown_epoch(best)),
                str(r.epochs_reported),
                r.experiment or "-",
            ]
        )
    return header, body


def write_search_section(search: Search, out: Path) -> tuple[str, list[Path]]:
    """Write the trials table and plots under ``out/search``; return Markdown and files."""
    if search.storage.startswith("sqlite:///"):
        db = Path(search.storage[len("sqlite:///") :])
        if not db.exists():
            return f"## Search: {search.path.name}\n\nNo study yet ({db}).\n", []
    study = Study(search)
    rows = study.rows()
    folder = out / FOLDER
    header, body = trials_table(search, rows)
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([header, *body])
    trials_csv = folder / "trials.csv"
    write_text_atomic(trials_csv, text.getvalue())
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    trials_md = folder / "trials.md"
    write_text_atomic(trials_md, "\n".join(md) + "\n")
    plots = study.plots(folder)
    files = [trials_csv, trials_md, *(folder / n for n, why in plots.items() if why == "ok")]

    best = study.best(1)
    lines = [
        f"## Search: {search.description or search.path.name}",
        "",
        f"Study `{search.study_name}`; objective {search.objective} (higher is better); "
        f"sampler {search.sampler['kind']}, pruner {search.pruner['kind']}; "
        f"{len(rows)} trials. Best epochs count from 1.",
        "",
    ]
    if best:
        b = best[0]
        values = ", ".join(f"{k}={_value(v)}" for k, v in b.params.items())
        lines += [f"Best: trial {b.number} ({values}): {b.value:.4f}, `{b.experiment}`.", ""]
    lines += [*md, "", f"- [{FOLDER}/trials.csv]({FOLDER}/trials.csv)"]
    for name, why in plots.items():
        if why == "ok":
            lines.append(f"- ![{name}]({FOLDER}/{name})")
        else:
            lines.append(f"- {name}: {why}")
    failed = [r for r in rows if r.state == "fail" and r.message]
    if failed:
        lines += ["", "Failed trials:", ""]
        lines += [f"- trial {r.number}: {r.message}" for r in failed]
    return "\n".join(lines) + "\n", files
