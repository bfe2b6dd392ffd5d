"""Results of a suite, summarised over seeds: tables (Markdown, CSV), curves, an index.

Experiments that differ only in their seeds (``train_seed``, ``val_seed``, ``test_seed``)
and name are one *group*: the same method on the same data, repeated. Grouping uses the
config snapshot each experiment folder holds (what actually ran), not the generated
config, so a hand-edited experiment does not hide among its supposed siblings.

Per seed the test accuracy is reported as the builder measured it: mean ± half-width of
the 95% interval over test tasks (``test_summary.json``). Over seeds a group reports the
mean ± sample standard deviation (ddof=1) of those per-seed means, for the ensemble of
the top validation models and for the best single model, laid out like the tables of
the MAML++ paper (one table per data set, a column per way/shot, a row per method).

Nothing is dropped silently: an experiment that is not started, still running, failed,
or whose files cannot be read is listed with its state and the reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from metasuite.config import NO_INNER_LOOP_LEARNERS, ExperimentConfig, load_config, to_dict
from metasuite.errors import UserError
from metasuite.fsutil import make_dirs, write_text_atomic
from metasuite.progress import progress_bar
from metasuite.results.paper_results import CITATION, PaperResult, is_paper_setup, paper_result
from metasuite.results.plots import SeedCurves, plot_learning_curves
from metasuite.results.status import (
    DONE,
    ExperimentStatus,
    SuiteExperiment,
    list_suite,
    read_json,
    read_status,
    read_summary_statistics,
)
from metasuite.stats import mean_std
from metasuite.text import plural, shown_epoch
from metasuite.training.experiment_dir import CONFIG_FILE, SUMMARY_FILE, TEST_SUMMARY_FILE

SEED_FIELDS: tuple[str, ...] = ("train_seed", "val_seed", "test_seed")
"""Fields in which the members of a group may differ (with ``experiment_name``)."""
VIEW_ONLY_FIELDS: tuple[str, ...] = ("tensorboard",)
"""Fields that change how a run is watched, never its numbers: not part of a group."""


@dataclass(frozen=True)
class TestScore:
    """One test measurement: accuracy mean and 95% CI half-width over tasks (fractions)."""

    accuracy_mean: float
    accuracy_ci95: float
    num_tasks: int | None
    epochs: tuple[int, ...]
    left_out: tuple[int, ...] = ()
    """Epochs an incomplete ensemble should have held (damaged or missing checkpoints)."""


@dataclass(frozen=True)
class Member:
    """One experiment (one seed) of a group."""

    name: str
    folder: Path
    config: ExperimentConfig
    status: ExperimentStatus
    curves: list[dict[str, float]]
    ensemble: TestScore | None
    best_single: TestScore | None
    problem: str | None = None
    """Why a finished experiment's test results could not be used."""
    curves_problem: str | None = None
    """Why its learning curves (``summary_statistics.csv``) could not be read."""

    @property
    def has_results(self) -> bool:
        return self.ensemble is not None and self.best_single is not None


@dataclass
class Group:
    """Experiments whose configs are equal except for seeds and name."""

    key: str
    dataset: str
    way: int
    shot: int
    method: str
    members: list[Member] = field(default_factory=list)
    paper: PaperResult | None = None
    """The MAML++ paper's published test accuracy where the group is the paper's method
    and setting (:func:`paper_for`); None for everything else."""

    @property
    def finished(self) -> list[Member]:
        return [m for m in self.members if m.has_results]

    @property
    def slug(self) -> str:
        text = f"{self.dataset}_{self.way}way_{self.shot}shot_{self.method}"
        # The key's prefix keeps names unique; the text, capped, keeps them readable.
        return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")[:80] + "_" + self.key[:8]

    def seed_label(self, member: Member) -> str:
        """The member's seeds, naming only those that vary within the group ("2", or
        "train 2, val 1"), so a suite that varies train_seed reads "0 1 2"."""
        seeds = _seeds(member.config)
        varying = [i for i in range(3) if len({_seeds(m.config)[i] for m in self.members}) > 1]
        if len({seeds[i] for i in varying}) <= 1:  # one varies, or all vary together
            return str(seeds[varying[0] if varying else 0])
        return ", ".join(f"{('train', 'val', 'test')[i]} {seeds[i]}" for i in varying)

    @property
    def distinct_seeds(self) -> int:
        """Finished members with different seeds: repeats of one seed are one sample."""
        return len({_seeds(m.config) for m in self.finished})

    def over_seeds(self, which: str) -> tuple[float | None, float | None]:
        """(mean, sample std) over distinct seeds of the per-seed test means; ``which``
        is ``"ensemble"`` or ``"best_single"``. Experiments that repeat one seed are
        averaged into one value first, so three runs of seed 0 are one seed, not three
        (they would shrink the std to a run-to-run noise). std is None below two seeds."""
        return seed_mean_std(self.seed_means(which))

    def seed_means(self, which: str) -> list[float]:
        """One test mean per distinct seed (repeats of a seed averaged), as
        :meth:`over_seeds` uses them."""
        per_seed: dict[tuple[int, int, int], list[float]] = {}
        for m in self.finished:
            per_seed.setdefault(_seeds(m.config), []).append(getattr(m, which).accuracy_mean)
        return [sum(v) / len(v) for v in per_seed.values()]

    def plot(self, path: Path) -> Path | None:
        """The group's learning curves (:func:`plot_learning_curves`) as a PNG at ``path``."""
        seeds = [
            SeedCurves(
                f"seed {self.seed_label(m)}" + ("" if m.has_results else f" ({m.status.state})"),
                m.curves,
            )
            for m in self.members
        ]
        total, done = len(self.members), len(self.finished)
        return plot_learning_curves(
            seeds,
            path,
            title=f"{dataset_title(self.dataset)} {self.way}-way {self.shot}-shot — {self.method}",
            subtitle=f"{plural(total, 'seed')}, {done} with test results",
        )


@dataclass(frozen=True)
class Excluded:
    """An experiment of the suite that is not (fully) in the tables, and why."""

    name: str
    state: str
    reason: str


def seed_mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """:func:`metasuite.stats.mean_std` (sample std) for a table cell: None where
    undefined (no seed; the std of one seed)."""
    mean, std = mean_std(values)
    return (None if math.isnan(mean) else mean), (None if math.isnan(std) else std)


def _seeds(config: ExperimentConfig) -> tuple[int, int, int]:
    return (config.train_seed, config.val_seed, config.effective_test_seed)


def group_key(config: ExperimentConfig) -> str:
    """sha256 of the config without seeds and name: equal key, same group."""
    data = to_dict(config)
    for name in (*SEED_FIELDS, "experiment_name", *VIEW_ONLY_FIELDS):
        data.pop(name)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def dataset_title(dataset_name: str) -> str:
    lowered = dataset_name.lower()
    if "omniglot" in lowered:
        return "Omniglot"
    if "imagenet" in lowered and "mini" in lowered:
        return "mini-ImageNet"
    return dataset_name


LEARNER_TITLES: dict[str, str] = {
    "meta_sgd": "Meta-SGD",
    "anil": "ANIL",
    "reptile": "Reptile",
    "protonet": "ProtoNet",
    "baseline": "Baseline",
    "baseline_pp": "Baseline++",
}
"""Table names of the meta-learners other than MAML (``meta_learner`` values)."""


def method_label(config: ExperimentConfig) -> str:
    """The MAML++ paper's names: MAML, MAML++, or MAML + the improvements switched on;
    the other meta-learners by name, with the MAML++ switches they combine with.

    MSL: multi-step loss; LSLR: learned per-layer per-step inner learning rates (for
    Meta-SGD, whose per-element rates are always learned: "per-step rates"); BNRS+BNWB:
    per-step batch-norm statistics (with per-step weights and biases); DA:
    derivative-order annealing (first order until first_order_to_second_order_epoch).
    """
    parts = []
    if config.use_multi_step_loss_optimization:
        parts.append("MSL")
    if config.learnable_per_layer_per_step_inner_loop_learning_rate:
        parts.append("per-step rates" if config.meta_learner == "meta_sgd" else "LSLR")
    if config.per_step_bn_statistics:
        parts.append("BNRS+BNWB")
    if config.second_order and config.first_order_to_second_order_epoch >= 0:
        parts.append("DA")
    if config.meta_learner != "maml":
        label = LEARNER_TITLES[config.meta_learner] + "".join(f" + {p}" for p in parts)
        first_order_means_something = config.meta_learner != "reptile" and (
            config.meta_learner not in NO_INNER_LOOP_LEARNERS
        )
        if not config.second_order and first_order_means_something:
            label += " (first order)"
        if config.meta_learner in ("baseline", "baseline_pp") and config.finetune_body:
            label += " (body fine-tuned)"
        return label
    core = {"MSL", "LSLR", "BNRS+BNWB"}
    if core.issubset(parts):
        label = "MAML++" + (" (DA)" if "DA" in parts else "")
    elif not parts:
        label = "MAML"
    else:
        label = "MAML + " + " + ".join(parts)
    if not config.second_order:
        label += " (first order)"
    return label


def paper_for(config: ExperimentConfig) -> PaperResult | None:
    """The one place a group's published number is looked up (tables and figures read
    :attr:`Group.paper`): by the config, so a label disambiguated for the table still
    finds it, and another backbone, learner or modality never does."""
    if not is_paper_setup(config):
        return None
    return paper_result(
        dataset_title(config.dataset_name),
        method_label(config),
        config.num_classes_per_set,
        config.num_samples_per_class,
    )


def _disambiguate(groups: list[Group], configs: dict[str, ExperimentConfig]) -> None:
    """Append the differing settings to labels that would otherwise share a table cell."""
    clashes: dict[tuple[str, int, int, str], list[Group]] = {}
    for g in groups:
        clashes.setdefault((g.dataset, g.way, g.shot, g.method), []).append(g)
    for same in clashes.values():
        if len(same) < 2:
            continue
        dicts = [to_dict(configs[g.key]) for g in same]
        differing = [
            k
            for k in dicts[0]
            if k not in (*SEED_FIELDS, "experiment_name")
            and len({json.dumps(d[k]) for d in dicts}) > 1
        ]
        for g, d in zip(same, dicts, strict=True):
            g.method += " (" + ", ".join(f"{k}={json.dumps(d[k])}" for k in differing) + ")"


def _score(raw: Any, name: str, path: Path) -> TestScore:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: {name!r} missing or not an object")
    try:
        mean = float(raw["accuracy_mean"])
        ci95 = float(raw["accuracy_ci95"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: {name} needs numbers accuracy_mean and accuracy_ci95") from None
    if not (math.isfinite(mean) and math.isfinite(ci95)):
        raise ValueError(f"{path}: {name} accuracy is not a finite number")
    tasks = raw.get("num_tasks")
    epochs = raw.get("epochs", [raw["epoch"]] if "epoch" in raw else [])
    return TestScore(
        mean,
        ci95,
        tasks if isinstance(tasks, int) else None,
        tuple(e for e in epochs if isinstance(e, int)),
        tuple(e for e in raw.get("left_out_epochs") or () if isinstance(e, int)),
    )


def read_test_summary(folder: Path) -> tuple[TestScore, TestScore] | None:
    """(ensemble, best single) from ``test_summary.json``; None when absent.

    Raises ValueError naming the file when it exists but cannot be used.
    """
    path = folder / TEST_SUMMARY_FILE
    data = read_json(path)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return _score(data.get("ensemble"), "ensemble", path), _score(
        data.get("best_single"), "best_single", path
    )


def _member_config(experiment: SuiteExperiment) -> tuple[ExperimentConfig | None, str]:
    """The snapshot in the folder (what ran), else the generated config (not started)."""
    snapshot = experiment.folder / CONFIG_FILE
    source = snapshot if snapshot.is_file() else experiment.generated_config
    if source is None:
        return None, f"no {CONFIG_FILE} in {experiment.folder} and no generated config"
    try:
        return load_config(source), ""
    except UserError as exc:
        return None, str(exc)


def collect(
    root: Path, configs: Path | None, only: str | Sequence[str] | None = None
) -> tuple[list[Group], list[Excluded]]:
    """Read every experiment of the suite; group them; list what cannot be tabulated."""
    groups: dict[str, Group] = {}
    group_configs: dict[str, ExperimentConfig] = {}
    excluded: list[Excluded] = []
    for experiment in list_suite(root, configs, only):
        config, why = _member_config(experiment)
        status = read_status(experiment, config=config)
        if config is None:
            excluded.append(Excluded(experiment.name, status.state, why))
            continue
        problem = None
        scores = None
        try:
            scores = read_test_summary(experiment.folder)
        except (ValueError, OSError) as exc:
            problem = str(exc)
        if scores is None and problem is None and status.state == DONE:
            problem = f"state is done but {experiment.folder / TEST_SUMMARY_FILE} is missing"
        curves, curves_problem = _curves(experiment.folder, status)
        member = Member(
            name=experiment.name,
            folder=experiment.folder,
            config=config,
            status=status,
            curves=curves,
            ensemble=scores[0] if scores else None,
            best_single=scores[1] if scores else None,
            problem=problem,
            curves_problem=curves_problem,
        )
        if not member.has_results:
            excluded.append(Excluded(experiment.name, status.state, _reason(status, problem)))
        key = group_key(config)
        if key not in groups:
            groups[key] = Group(
                key,
                config.dataset_name,
                config.num_classes_per_set,
                config.num_samples_per_class,
                method_label(config),
                paper=paper_for(config),
            )
            group_configs[key] = config
        groups[key].members.append(member)
    ordered = sorted(groups.values(), key=_group_order)
    _disambiguate(ordered, group_configs)
    ordered.sort(key=_group_order)
    return ordered, excluded


def _curves(folder: Path, status: ExperimentStatus) -> tuple[list[dict[str, float]], str | None]:
    """The epoch rows, or none and why: a damaged file, or a done experiment without
    epochs, must read as what it is, not as "no finished epoch yet"."""
    path = folder / SUMMARY_FILE
    try:
        rows = read_summary_statistics(path)
    except (ValueError, OSError) as exc:
        return [], str(exc)
    if not rows and status.state == DONE:
        return [], f"state is done but {path} has no epoch rows (missing or emptied)"
    return rows, None


def _reason(status: ExperimentStatus, problem: str | None) -> str:
    """Why an experiment has no numbers in the tables, with how far it got."""
    if problem:
        return problem
    parts = []
    if status.epoch is not None or status.total_epochs is not None:
        parts.append(f"epoch {status.epoch or 0}/{status.total_epochs or '?'}")
    if status.detail:
        parts.append(status.detail)
    return "no test results yet" + (f" ({'; '.join(parts)})" if parts else "")


def _method_rank(method: str) -> tuple[int, str]:
    """MAML, its variants, MAML++, then the other meta-learners in LEARNER_TITLES order."""
    if method == "MAML" or method.startswith("MAML ("):
        return 0, method
    if method.startswith("MAML++"):
        return 2, method
    for i, title in enumerate(LEARNER_TITLES.values()):
        if method == title or method.startswith((f"{title} ", f"{title}+")):
            return 3 + i, method
    return 1, method


def _dataset_rank(dataset: str) -> tuple[int, str]:
    """The paper's order: Omniglot, then mini-ImageNet, then anything else."""
    title = dataset_title(dataset)
    return ({"Omniglot": 0, "mini-ImageNet": 1}.get(title, 2), dataset)


def _group_order(g: Group) -> tuple[Any, ...]:
    return (_dataset_rank(g.dataset), _method_rank(g.method), g.way, g.shot)


# ------------------------------------------------------------------ formatting


def pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def cell(group: Group, which: str) -> str:
    """'99.47 ± 0.05% (3 seeds)': mean ± std over seeds, and how many seeds it rests on
    ('1 seed, 3 runs' where finished experiments repeat a seed)."""
    mean, std = group.over_seeds(which)
    done, total = len(group.finished), len(group.members)
    seeds = plural(done, "seed") if done == total else f"{done}/{plural(total, 'seed')}"
    if group.distinct_seeds < done:
        seeds = f"{plural(group.distinct_seeds, 'seed')}, {done}/{plural(total, 'run')}"
        if done == total:
            seeds = f"{plural(group.distinct_seeds, 'seed')}, {plural(done, 'run')}"
    if mean is None:
        return f"— ({seeds})"
    spread = f" ± {pct(std)}" if std is not None else ""
    return f"{pct(mean)}{spread}% ({seeds})"


def score_text(score: TestScore | None) -> str:
    if score is None:
        return "-"
    tasks = f" ({plural(score.num_tasks, 'task')})" if score.num_tasks is not None else ""
    return f"{pct(score.accuracy_mean)} ± {pct(score.accuracy_ci95)}%{tasks}"


def _md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def paper_tables(groups: list[Group]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Per data set: header and rows of the paper-style table (method x way/shot)."""
    tables: dict[str, tuple[list[str], list[list[str]]]] = {}
    for dataset in dict.fromkeys(g.dataset for g in groups):
        mine = [g for g in groups if g.dataset == dataset]
        columns = sorted({(g.way, g.shot) for g in mine})
        methods = sorted(dict.fromkeys(g.method for g in mine), key=_method_rank)
        header = ["Method", "Test model", *(f"{w}-way {s}-shot" for w, s in columns)]
        rows = []
        for method in methods:
            for which, title in (("ensemble", "ensemble"), ("best_single", "best single")):
                row = [method, title]
                for way, shot in columns:
                    match = [
                        g for g in mine if g.method == method and (g.way, g.shot) == (way, shot)
                    ]
                    row.append(cell(match[0], which) if match else "")
                rows.append(row)
            papers = [_paper_cell(mine, method, way, shot) for way, shot in columns]
            if any(papers):
                rows.append([method, PAPER_ROW, *papers])
        tables[dataset] = (header, rows)
    return tables


PAPER_ROW = "paper (full protocol)"
"""Test-model column of the row that quotes the paper's published number."""


def _paper_cell(groups: list[Group], method: str, way: int, shot: int) -> str:
    paper = next(
        (g.paper for g in groups if (g.method, g.way, g.shot) == (method, way, shot)), None
    )
    return "" if paper is None else f"{paper.text()}%"


def _ensemble_text(score: TestScore | None) -> str:
    text = score_text(score)
    if score is not None and score.left_out:
        text += f" (incomplete: epochs {[shown_epoch(e) for e in score.left_out]} left out)"
    return text


def per_seed_rows(groups: list[Group]) -> tuple[list[str], list[list[str]]]:
    header = [
        "Data set", "Method", "Way", "Shot", "Seed", "Experiment", "State",
        "Ensemble (± 95% CI over tasks)", "Best single (± 95% CI over tasks)", "Best val epoch",
    ]  # fmt: skip
    rows = []
    for g in groups:
        for m in g.members:
            best_epoch = m.best_single.epochs[0] if m.best_single and m.best_single.epochs else None
            rows.append([
                dataset_title(g.dataset), g.method, str(g.way), str(g.shot), g.seed_label(m),
                m.name, m.status.state, _ensemble_text(m.ensemble), score_text(m.best_single),
                "-" if best_epoch is None else str(shown_epoch(best_epoch)),
            ])  # fmt: skip
    return header, rows


def results_markdown(groups: list[Group], excluded: list[Excluded]) -> str:
    lines = ["# Test accuracy", ""]
    lines.append(
        "Cells: mean ± sample standard deviation over seeds of the per-seed test accuracy "
        "(each the mean over test tasks), and how many seeds are finished. *Ensemble*: "
        "the top validation models' predictions averaged; *best single*: the model of the "
        "best validation epoch."
    )
    if any(g.paper for g in groups):
        lines[-1] += (
            f" *{PAPER_ROW}*: the published test accuracy of the same method and setting "
            f"({CITATION}), ± as printed there."
        )
    lines.append("")
    for dataset, (header, rows) in paper_tables(groups).items():
        lines += [f"## {dataset_title(dataset)} (`{dataset}`)", ""]
        lines.append(_md_row(header))
        lines.append(_md_row(["---"] * len(header)))
        lines += [_md_row(r) for r in rows]
        lines.append("")
    header, rows = per_seed_rows(groups)
    lines += ["## Per seed", "", _md_row(header), _md_row(["---"] * len(header))]
    lines += [_md_row(r) for r in rows]
    lines.append("")
    lines += excluded_markdown(excluded)
    return "\n".join(lines)


def excluded_markdown(excluded: list[Excluded]) -> list[str]:
    lines = ["## Not in the tables", ""]
    if not excluded:
        return [*lines, "Every experiment of the suite has test results.", ""]
    lines += [_md_row(["Experiment", "State", "Reason"]), _md_row(["---"] * 3)]
    lines += [_md_row([e.name, e.state, e.reason or "-"]) for e in excluded]
    return [*lines, ""]


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.4f}"


def summary_csv(groups: list[Group]) -> str:
    """One row per group, numbers in percent (blank where undefined); seeds_finished
    counts distinct seeds, runs_finished the finished experiments (more where a seed
    was run twice)."""
    header = [
        "dataset", "method", "way", "shot", "seeds_finished", "seeds_total", "seeds",
        "runs_finished",
        "ensemble_mean_pct", "ensemble_std_pct", "best_single_mean_pct", "best_single_std_pct",
        "experiments",
    ]  # fmt: skip
    rows = []
    for g in groups:
        ens_mean, ens_std = g.over_seeds("ensemble")
        best_mean, best_std = g.over_seeds("best_single")
        rows.append([
            g.dataset, g.method, g.way, g.shot, g.distinct_seeds, len(g.members),
            "; ".join(g.seed_label(m) for m in g.finished), len(g.finished),
            _num(ens_mean), _num(ens_std),
            _num(best_mean), _num(best_std), " ".join(m.name for m in g.members),
        ])  # fmt: skip
    return _csv_text(header, rows)


def per_seed_csv(groups: list[Group]) -> str:
    header = [
        "dataset", "method", "way", "shot", "seed", "train_seed", "val_seed", "test_seed",
        "experiment", "state", "ensemble_mean_pct", "ensemble_ci95_pct", "ensemble_num_tasks",
        "ensemble_epochs",
        "best_single_mean_pct", "best_single_ci95_pct", "best_single_num_tasks",
        "best_single_epoch",
    ]  # fmt: skip
    rows = []
    for g in groups:
        for m in g.members:
            e, b = m.ensemble, m.best_single
            rows.append([
                g.dataset, g.method, g.way, g.shot, g.seed_label(m), *_seeds(m.config), m.name,
                m.status.state,
                _num(e and e.accuracy_mean), _num(e and e.accuracy_ci95),
                "" if e is None or e.num_tasks is None else e.num_tasks,
                "" if e is None else " ".join(str(shown_epoch(x)) for x in e.epochs),
                _num(b and b.accuracy_mean), _num(b and b.accuracy_ci95),
                "" if b is None or b.num_tasks is None else b.num_tasks,
                "" if b is None or not b.epochs else shown_epoch(b.epochs[0]),
            ])  # fmt: skip
    return _csv_text(header, rows)


def _file_slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


@dataclass(frozen=True)
class ReportFiles:
    index: Path
    results_md: Path
    summary_csv: Path
    per_seed_csv: Path
    table_csvs: tuple[Path, ...]
    plots: tuple[Path, ...]


def write_report(
    root: Path,
    configs: Path | None,
    out: Path,
    *,
    only: str | Sequence[str] | None = None,
    quiet: bool = False,
    extra: Callable[[Path], tuple[str, list[Path]]] | None = None,
) -> ReportFiles:
    """Collect the suite under ``root`` and write index.md, tables and plots into ``out``.

    ``extra(out)`` writes a section of its own (a search's trials and plots) and returns
    its Markdown, appended to index.md, and its files, owned by the report like the rest."""
    groups, excluded = collect(root, configs, only)
    if not groups and not excluded:
        if only:  # the suite may well be there; the pattern selected nothing of it
            patterns = " ".join([only] if isinstance(only, str) else only)
            raise UserError(f"no experiment matches --only {patterns!r} ({root}, {configs})")
        raise UserError(f"no experiments under {root} and no generated configs in {configs}")
    make_dirs(out)
    previous = owned_files(out)
    results_md, summary, per_seed = (
        out / "results.md",
        out / "results.csv",
        out / "results_per_seed.csv",
    )
    index = out / "index.md"
    plot_dir = out / "plots"
    paper = paper_tables(groups)
    table_paths = {dataset: out / f"table_{_file_slug(dataset)}.csv" for dataset in paper}
    _refuse_foreign_files(
        out,
        previous,
        [index, results_md, summary, per_seed, *table_paths.values()]
        + [plot_dir / f"{g.slug}.png" for g in groups],
    )
    write_text_atomic(results_md, results_markdown(groups, excluded))
    write_text_atomic(summary, summary_csv(groups))
    write_text_atomic(per_seed, per_seed_csv(groups))
    tables = []
    for dataset, (header, rows) in paper.items():
        write_text_atomic(table_paths[dataset], _csv_text(header, rows))
        tables.append(table_paths[dataset])

    plots: dict[str, Path] = {}
    for g in progress_bar(groups, quiet=quiet, desc="plots", unit="group", leave=False):
        path = g.plot(plot_dir / f"{g.slug}.png")
        if path is not None:
            plots[g.key] = path

    section, extra_files = extra(out) if extra is not None else ("", [])
    text = index_markdown(groups, excluded, plots, out, root)
    write_text_atomic(index, text + (f"\n{section}" if section else ""))
    written = [index, results_md, summary, per_seed, *tables, *plots.values(), *extra_files]
    _remove_stale(out, previous, written)
    return ReportFiles(index, results_md, summary, per_seed, tuple(tables), tuple(plots.values()))


OWNED_FILES = ".metasuite-report.json"
"""In the report folder: the files the last report wrote, so the next one removes those
that no longer apply (a vanished group's plot, a data set's table) and nothing else."""


def owned_files(out: Path) -> set[str]:
    """Paths (relative to ``out``) the previous report wrote; empty without a record."""
    try:
        data = read_json(out / OWNED_FILES)
    except (ValueError, OSError):
        return set()  # an unreadable record owns nothing: better a stale file than a lost one
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        return set()
    return {f for f in files if isinstance(f, str) and _inside(f)}


def _refuse_foreign_files(out: Path, previous: set[str], targets: list[Path]) -> None:
    """A report overwrites only what a report wrote before (its record, :data:`OWNED_FILES`):
    a user's own ``results.md`` in ``--out`` is refused up front, one line, nothing written."""
    foreign = [t for t in targets if t.exists() and t.relative_to(out).as_posix() not in previous]
    if foreign:
        more = f" (and {plural(len(foreign) - 1, 'other file')})" if len(foreign) > 1 else ""
        raise UserError(
            f"{foreign[0]}{more}: not written by metasuite report, which would overwrite it; "
            "move it or choose another --out"
        )


def _inside(relative: str) -> bool:
    parts = Path(relative).parts
    return bool(parts) and not Path(relative).is_absolute() and ".." not in parts


def _remove_stale(out: Path, previous: set[str], written: list[Path]) -> None:
    """Delete what the previous report wrote and this one did not; record this one's."""
    now = sorted(p.relative_to(out).as_posix() for p in written)
    for relative in sorted(previous - set(now)):
        (out / relative).unlink(missing_ok=True)
    record = {"format": 1, "written_by": "metasuite report", "files": now}
    write_text_atomic(out / OWNED_FILES, json.dumps(record, indent=2) + "\n")


def index_markdown(
    groups: list[Group], excluded: list[Excluded], plots: dict[str, Path], out: Path, root: Path
) -> str:
    members = sum(len(g.members) for g in groups)
    grouped = {m.name for g in groups for m in g.members}
    ungrouped = [e for e in excluded if e.name not in grouped]
    finished = sum(len(g.finished) for g in groups)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Suite report",
        "",
        f"Experiments root: `{root}`; written {now}.",
        "",
        f"{plural(members + len(ungrouped), 'experiment')} in {plural(len(groups), 'group')}"
        + (f" (and {len(ungrouped)} without a usable config)" if ungrouped else "")
        + f"; {finished} with test results, "
        f"{len(excluded)} not (fully) in the tables (listed below).",
        "",
        "- [results.md](results.md): tables of test accuracy (paper layout, and per seed)",
        "- [results.csv](results.csv): one row per group, mean and std over seeds",
        "- [results_per_seed.csv](results_per_seed.csv): one row per experiment",
    ]
    for dataset in dict.fromkeys(g.dataset for g in groups):
        name = f"table_{_file_slug(dataset)}.csv"
        lines.append(f"- [{name}]({name}): the {dataset_title(dataset)} table as CSV")
    lines += ["", "## Groups", ""]
    for g in groups:
        title = f"{dataset_title(g.dataset)} {g.way}-way {g.shot}-shot, {g.method}"
        lines += [f"### {title}", ""]
        lines.append(
            f"Ensemble {cell(g, 'ensemble')}; best single {cell(g, 'best_single')}. "
            "Experiments: " + ", ".join(f"`{m.name}` ({m.status.state})" for m in g.members)
        )
        lines.append("")
        if g.distinct_seeds < len(g.finished):
            lines += [
                f"{plural(len(g.finished), 'finished experiment')} of this group use only "
                f"{plural(g.distinct_seeds, 'distinct seed')}: repeats of a seed are "
                "averaged into one value, not counted as more seeds.",
                "",
            ]
        damaged = [m for m in g.members if m.curves_problem]
        for m in damaged:
            lines += [f"Learning curves of `{m.name}` left out: {m.curves_problem}", ""]
        if g.key in plots:
            rel = plots[g.key].relative_to(out).as_posix()
            lines += [f"![learning curves: {title}]({rel})", ""]
        elif not damaged:
            lines += ["No finished epoch yet, so no learning curves.", ""]
    lines += excluded_markdown(excluded)
    return "\n".join(lines)
