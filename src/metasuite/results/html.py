"""``metasuite report --html``: the whole suite as one self-contained HTML page.

A page that opens anywhere, years later, with no server and no network: every figure
is a PNG embedded as a ``data:`` URI, the style sheet is inline, there is no script,
and a Content-Security-Policy forbids the browser to fetch anything (so a stray link
could not load even if one slipped in). What it shows, all read from the experiment
folders (this module never imports training code):

- per data set, one row per method and way/shot: test accuracy as the mean over seeds
  and its 95% confidence half-width over seeds (:func:`metasuite.stats.mean_ci95`), the
  number of seeds, and the experiments of the group without results, by name; where the
  group is the MAML++ paper's method and setting, the paper's published number beside
  it (:mod:`metasuite.results.paper_results`);
- per setting (data set, way, shot), the learning curves of all its methods on the same
  axes, a band over seeds each (:func:`metasuite.results.plots.overlay_png`), and the
  paper's number as a dashed line on the validation panel where it has one;
- the per-seed table and the experiments not in the tables, with the reason;
- the provenance of each experiment from ``manifest.json``: commit, config hash,
  torch version, device, wall time, how many times it was resumed;
- MAML++'s own diagnostics from each metrics log: the learned per-layer, per-step inner
  rates (LSLR) and the MSL weights over epochs.

A damaged metrics log or TensorBoard event file is named in one line under
"Problems", and the page still covers every other experiment.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from metasuite import __version__
from metasuite.errors import UserError
from metasuite.fsutil import write_text_atomic
from metasuite.progress import progress_bar
from metasuite.results.metrics_log import check_event_files, read_metrics_log
from metasuite.results.paper_results import CITATION
from metasuite.results.plots import SeedCurves, inner_loop_png, overlay_png
from metasuite.results.report import (
    Group,
    Member,
    collect,
    dataset_title,
    pct,
    per_seed_rows,
)
from metasuite.results.status import parse_time, read_json
from metasuite.stats import mean_ci95
from metasuite.text import plural

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""Nothing but the page itself and its data: images may load."""

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0 1.5em; }
.problem { color: #a00; } .note { color: #555; font-size: 0.92em; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


@dataclass
class Page:
    """The HTML text and what it holds (the command prints the counts; tests check
    them against what the browser finds)."""

    text: str = ""
    images: int = 0
    tables: int = 0
    problems: list[str] = field(default_factory=list)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: set[int] = frozenset()
           ) -> str:  # fmt: skip
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _ci_cell(group: Group, which: str) -> tuple[str, str]:
    """(mean %, ± 95% CI over seeds %); the CI needs two seeds."""
    values = group.seed_means(which)
    if not values:
        return "—", "—"
    mean, ci = mean_ci95(values)
    return pct(mean), (f"± {pct(ci)}" if len(values) >= 2 else "— (1 seed)")


def accuracy_rows(groups: list[Group]) -> dict[str, list[list[str]]]:
    """Per data set: one row per group (method, way/shot). A data set with a group that
    is the paper's gets a "Paper" column (:data:`PAPER_COLUMN`, "—" for its other
    groups); the others keep the plain :data:`ACCURACY_HEADER` layout."""
    out: dict[str, list[list[str]]] = {}
    for g in groups:
        ens, ens_ci = _ci_cell(g, "ensemble")
        best, best_ci = _ci_cell(g, "best_single")
        missing = [f"{m.name} ({m.status.state})" for m in g.members if not m.has_results]
        out.setdefault(g.dataset, []).append([
            g.method, f"{g.way}-way {g.shot}-shot",
            f"{g.distinct_seeds} of {len(g.members)}", ens, ens_ci, best, best_ci,
            g.paper.text() if g.paper else "—", "; ".join(missing) or "—",
        ])  # fmt: skip
    with_paper = {g.dataset for g in groups if g.paper}
    for dataset, rows in out.items():
        if dataset not in with_paper:
            for row in rows:
                del row[PAPER_COLUMN]
    return out


ACCURACY_HEADER = [
    "Method", "Setting", "Seeds with results", "Ensemble (%)", "95% CI over seeds",
    "Best single (%)", "95% CI over seeds", "Missing or failed",
]  # fmt: skip
PAPER_COLUMN = 7
"""Where the paper's number goes in a row: after ours, before what is missing."""
PAPER_HEADER = "Paper (%, full protocol)"


def accuracy_header(rows: list[list[str]]) -> list[str]:
    """:data:`ACCURACY_HEADER`, with the paper's column where the rows carry it."""
    if rows and len(rows[0]) > len(ACCURACY_HEADER):
        return [*ACCURACY_HEADER[:PAPER_COLUMN], PAPER_HEADER, *ACCURACY_HEADER[PAPER_COLUMN:]]
    return ACCURACY_HEADER


def _settings(groups: list[Group]) -> dict[tuple[str, int, int], list[Group]]:
    out: dict[tuple[str, int, int], list[Group]] = {}
    for g in groups:
        out.setdefault((g.dataset, g.way, g.shot), []).append(g)
    return out


def _duration_s(run: dict[str, Any]) -> float | None:
    start, end = parse_time(run.get("started")), parse_time(run.get("ended"))
    return None if start is None or end is None else max((end - start).total_seconds(), 0.0)


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def provenance_row(member: Member) -> list[str]:
    """Name, state, commit, config hash, torch, device, wall time, resumes (manifest)."""
    try:
        manifest = read_json(member.folder / "manifest.json")
    except (ValueError, OSError) as exc:
        return [member.name, member.status.state, f"manifest unreadable: {exc}", *["—"] * 5]
    runs = manifest.get("runs") if isinstance(manifest, dict) else None
    if not isinstance(runs, list) or not runs or not isinstance(runs[-1], dict):
        return [member.name, member.status.state, "no manifest.json", *["—"] * 5]
    last = runs[-1]
    git = last.get("git") or {}
    commit = str(git.get("commit") or "—")[:10] + (" (dirty)" if git.get("dirty") else "")
    devices = ", ".join(
        str(d.get("name") or d.get("device")) for d in last.get("devices") or [] if d
    )
    durations = [_duration_s(r) for r in runs if isinstance(r, dict)]
    known = [d for d in durations if d is not None]
    wall = _hms(sum(known)) if known else "—"
    if len(known) < len(durations):
        wall += f" ({plural(len(durations) - len(known), 'run')} without an end time)"
    resumes = sum(1 for r in runs if isinstance(r, dict) and r.get("resumed_from"))
    return [
        member.name, member.status.state, commit, str(last.get("config_hash") or "—")[:12],
        str((last.get("software") or {}).get("torch") or "—"), devices or "—", wall,
        str(resumes),
    ]  # fmt: skip


PROVENANCE_HEADER = [
    "Experiment", "State", "Commit", "Config hash", "torch", "Device", "Wall time (h:mm:ss)",
    "Resumes",
]  # fmt: skip


def build_page(
    root: Path, configs: Path | None, *, only: str | Sequence[str] | None = None,
    quiet: bool = False,
) -> Page:  # fmt: skip
    """Collect the suite under ``root`` and render the page (nothing is written)."""
    groups, excluded = collect(root, configs, only)
    if not groups and not excluded:
        raise UserError(f"no experiments under {root} and no generated configs in {configs}")
    page = Page()
    parts: list[str] = []
    members = [m for g in groups for m in g.members]
    logs = {m.name: read_metrics_log(m.folder) for m in members}
    for m in members:
        if logs[m.name].problem:
            page.problems.append(str(logs[m.name].problem))
        _, event_problem = check_event_files(m.folder)
        if event_problem:
            page.problems.append(event_problem)
        if m.curves_problem:
            page.problems.append(f"learning curves of {m.name} left out: {m.curves_problem}")

    def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: set[int]) -> str:
        page.tables += 1
        return _table(header, rows, numeric)

    def image(png: bytes, alt: str) -> str:
        page.images += 1
        return _img(png, alt)

    finished = sum(len(g.finished) for g in groups)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(
        f"<h1>Suite report</h1><p>Experiments root <code>{_e(root)}</code>; written {now} "
        f"by metasuite {_e(__version__)}. {plural(len(members), 'experiment')} in "
        f"{plural(len(groups), 'group')}; {finished} with test results, "
        f"{len(excluded)} not (fully) in the tables.</p>"
    )
    if page.problems:
        items = "".join(f'<li class="problem">{_e(p)}</li>' for p in page.problems)
        parts.append(f'<h2 id="problems">Problems</h2><ul>{items}</ul>')

    parts.append('<h2 id="accuracy">Test accuracy</h2><p class="note">Mean over seeds of '
                 "each seed's test accuracy (itself a mean over test tasks) and the 95% "
                 "confidence half-width over seeds, 1.96 · sample std / √seeds. "
                 "<i>Ensemble</i>: the top validation models' predictions averaged; "
                 "<i>best single</i>: the model of the best validation epoch.</p>")  # fmt: skip
    if any(g.paper for g in groups):
        parts.append(f'<p class="note"><i>Paper</i>: the published test accuracy of the '
                     f"same method and setting ({_e(CITATION)}) after its full training "
                     "protocol, ± as printed there; shown only for MAML and MAML++ with "
                     "the reference conv net on Omniglot and mini-ImageNet.</p>")  # fmt: skip
    for dataset, rows in accuracy_rows(groups).items():
        parts.append(f"<h3>{_e(dataset_title(dataset))} (<code>{_e(dataset)}</code>)</h3>")
        header = accuracy_header(rows)
        parts.append(table(header, rows, set(range(2, len(header) - 1))))

    parts.append('<h2 id="curves">Learning curves</h2><p class="note">The methods of one '
                 "setting on the same axes: the mean over seeds, and mean ± one sample "
                 "standard deviation over seeds as a band (from two seeds on).</p>")  # fmt: skip
    settings = _settings(groups)
    for (dataset, way, shot), same in progress_bar(
        settings.items(), quiet=quiet, desc="figures", unit="setting", leave=False
    ):
        title = f"{dataset_title(dataset)} {way}-way {shot}-shot"
        methods = [
            (g.method, [SeedCurves(m.name, m.curves) for m in g.members if m.curves]) for g in same
        ]
        papers = {g.method: g.paper.mean for g in same if g.paper}
        png = overlay_png(methods, title=title, subtitle=f"{plural(len(same), 'method')}",
                          references=papers)  # fmt: skip
        parts.append(f"<h3>{_e(title)}</h3>")
        parts.append(image(png, f"learning curves: {title}") if png else
                     '<p class="note">No finished epoch yet.</p>')  # fmt: skip

    header, rows = per_seed_rows(groups)
    parts.append('<h2 id="per-seed">Per seed</h2>')
    parts.append(table(header, rows, {7, 8}))
    parts.append('<h2 id="excluded">Not in the tables</h2>')
    if excluded:
        rows_out = [[x.name, x.state, x.reason or "—"] for x in excluded]
        parts.append(table(["Experiment", "State", "Reason"], rows_out, set()))
    else:
        parts.append("<p>Every experiment of the suite has test results.</p>")

    parts.append('<h2 id="provenance">Provenance</h2><p class="note">From each '
                 "experiment's <code>manifest.json</code> (its latest run; wall time and "
                 "resumes over all runs).</p>")  # fmt: skip
    parts.append(table(PROVENANCE_HEADER, [provenance_row(m) for m in members], {6, 7}))

    parts.append('<h2 id="inner-loop">Inner-loop diagnostics</h2><p class="note">From each '
                 "metrics log (<code>logs/metrics.jsonl</code>): the learned inner "
                 "learning rate of each adapted tensor at each inner step (LSLR) at the "
                 "end of every epoch, and the multi-step loss weights each epoch trained "
                 "with (MSL).</p>")  # fmt: skip
    shown = 0
    for m in members:
        png = inner_loop_png(logs[m.name].split("val"), title=m.name)
        if png:
            shown += 1
            parts.append(f"<h3>{_e(m.name)}</h3>{image(png, f'inner-loop diagnostics: {m.name}')}")
    if not shown:
        parts.append("<p>No metrics log with LSLR rates or MSL weights.</p>")

    page.text = _document("metasuite suite report", "\n".join(parts))
    return page


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
        "</body></html>\n"
    )


def write_html_report(
    root: Path, configs: Path | None, path: Path, *,
    only: str | Sequence[str] | None = None, quiet: bool = False,
) -> Page:  # fmt: skip
    """Render the page and write it atomically to ``path``."""
    page = build_page(root, configs, only=only, quiet=quiet)
    write_text_atomic(path, page.text)
    return page


__all__ = ["CSP", "Page", "build_page", "provenance_row", "write_html_report"]
