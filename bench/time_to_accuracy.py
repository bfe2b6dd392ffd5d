"""Validation accuracy against wall-clock time and meta-iterations, then the normal test.

    python bench/time_to_accuracy.py CONFIG --minutes M [--val-every N] [--gpus cpu]
        [--experiments-root DIR] [--out DIR] [--overlay CSV --label NAME]... [--quiet]
    python bench/time_to_accuracy.py --plot-only OUT.png --overlay CSV --label NAME ...

Trains CONFIG through the real loop (``runner.run_experiment`` with a
:class:`BudgetBuilder`, a :class:`~metasuite.training.builder.Builder` that only
observes), so the run is the experiment the config describes, checkpoints, resume and
all. What the builder adds:

- **Frequent validation**: every ``--val-every`` meta-iterations the model is evaluated
  on the fixed validation tasks (the same ``num_evaluation_tasks`` tasks the builder
  validates on at each epoch end). ``MamlSystem.evaluate`` changes no state and the
  tasks need no random numbers, so these probes leave training bit-for-bit as it would
  be without them; they only cost time, which is counted in the wall clock (as the
  reference code counts its own validation in ``epoch_run_time``).
- **A wall-clock budget**: an epoch is started only if it is expected (by the duration
  of the last one) to end within ``--minutes``; then the builder's normal test phase
  runs: the ensemble of the top ``max_models_to_save`` validation epochs and the best
  single epoch on the test tasks, mean and 95% CI (``test_summary.json``). The config
  is not changed (the learning-rate and multi-step-loss schedules are the config's,
  over its ``total_epochs``), so a budget run is the first epochs of the protocol run,
  not a shortened protocol.

The run keeps its curve in ``<experiment>/time_to_accuracy.csv`` (rewritten atomically
at every point), so killing this script and running the same command again resumes the
run (from the builder's checkpoint) and the curve as one run; the wall clock of the
interrupted part is the builder's own record of it (epoch times plus the time spent on
the epoch in progress at the checkpoint).

Writes to ``--out`` (default ``bench/results/time_to_accuracy/``): ``<name>.csv``
(``wall_s, iteration, epoch, val_accuracy, val_loss, kind``; kind is ``probe`` or
``epoch`` for the builder's own end-of-epoch validation), ``<name>.png`` (accuracy
against wall-clock minutes and against meta-iterations, with the ``--overlay`` curves)
and ``<name>.json`` (budget, iterations, test summary, machine, torch version, load).

``--overlay`` reads a curve of another run: a CSV written by this script, a
``summary_statistics.csv`` written by metasuite (``epoch``, ``epoch_time_s``,
``val_accuracy_mean``) or by the reference MAML++ code (``epoch``, ``epoch_run_time``,
``val_accuracy_mean``). Summary rows are consecutive epochs of ``--overlay-iters-per-epoch``
(default 500, ``total_iter_per_epoch`` of the reference configs) iterations; the time
axis is the running sum of the epoch times.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metasuite.config import REPO_ROOT, load_config
from metasuite.errors import UserError
from metasuite.fsutil import write_bytes_atomic, write_text_atomic
from metasuite.stats import mean_std
from metasuite.text import shown_epoch
from metasuite.training.builder import Builder, Outcome
from metasuite.training.experiment_dir import experiments_root
from metasuite.training.runner import run_experiment
from metasuite.training.runtime import resolve_devices

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OUT = REPO_ROOT / "bench" / "results" / "time_to_accuracy"
CURVE_FILE = "time_to_accuracy.csv"
COLUMNS = ("wall_s", "iteration", "epoch", "val_accuracy", "val_loss", "kind")
DEFAULT_VAL_EVERY = 250


@dataclass
class Point:
    """One validation of the fixed validation tasks."""

    wall_s: float
    iteration: int
    epoch: float
    val_accuracy: float
    val_loss: float
    kind: str

    def row(self) -> list[str]:
        return [
            f"{self.wall_s:.3f}",
            str(self.iteration),
            f"{self.epoch:.4f}",
            repr(self.val_accuracy),
            repr(self.val_loss),
            self.kind,
        ]


@dataclass
class Curve:
    label: str
    wall_s: list[float] = field(default_factory=list)
    iteration: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)


def read_points(path: Path) -> list[Point]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [
            Point(
                float(r["wall_s"]),
                int(r["iteration"]),
                float(r["epoch"]),
                float(r["val_accuracy"]),
                float(r["val_loss"]),
                r["kind"],
            )
            for r in csv.DictReader(handle)
        ]


def points_csv(points: list[Point]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for p in points:
        writer.writerow(p.row())
    return buffer.getvalue()


class BudgetBuilder(Builder):
    """The builder with validation probes and a wall-clock budget (see module doc).

    Set the class attributes ``budget_s`` and ``val_every`` before handing the class to
    ``run_experiment`` (it constructs the builder itself).
    """

    budget_s: float = math.inf
    val_every: int = DEFAULT_VAL_EVERY
    instance: BudgetBuilder | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.points: list[Point] = []
        self.clock_base = 0.0
        self.clock_start: float | None = None
        self.last_epoch_s: float | None = None
        self.epoch_started_at = 0.0
        self.budget_spent = False
        self.loads: list[tuple[float, float, float]] = []
        type(self).instance = self

    # --------------------------------------------------------------- clock
    def wall(self) -> float:
        """Seconds of training so far, over all (resumed) runs of this experiment."""
        if self.clock_start is None:
            return self.clock_base
        return self.clock_base + time.monotonic() - self.clock_start

    def restore(self, payload: dict[str, Any]) -> None:
        super().restore(payload)
        p = self.progress
        self.clock_base = sum(float(r["epoch_time_s"]) for r in p.rows) + p.epoch_elapsed_s
        if p.rows:
            self.last_epoch_s = float(p.rows[-1]["epoch_time_s"])
        self.points = [q for q in read_points(self.curve_path) if q.iteration <= p.iteration]
        self.budget_spent = self._over_budget()

    @property
    def curve_path(self) -> Path:
        return self.exp.path / CURVE_FILE

    def _over_budget(self) -> bool:
        """True when the next epoch (as long as the last one) would end past the budget."""
        if not self.progress.rows:
            return False  # at least one epoch, or there is nothing to test
        return self.wall() + (self.last_epoch_s or 0.0) > self.budget_s

    @property
    def training_complete(self) -> bool:  # type: ignore[override]
        return self.progress.epoch >= self.cfg.total_epochs or self.budget_spent

    # --------------------------------------------------------------- hooks
    def train(self) -> Outcome:
        self.clock_start = time.monotonic()
        self.epoch_started_at = self.wall()
        if self.progress.iteration == 0 and not self.points:
            self.probe()  # the untrained model: where every curve starts
        return super().train()

    def meta_iteration(self, iteration: int, epoch: int) -> dict[str, float]:
        metrics = super().meta_iteration(iteration, epoch)
        done = iteration + 1
        if (
            self.val_every > 0
            and done % self.val_every == 0
            and done % self.cfg.total_iter_per_epoch != 0  # the builder validates there
        ):
            self.probe(done)
        return metrics

    def end_epoch(self) -> None:
        super().end_epoch()
        row = self.progress.rows[-1]
        self.record(
            Point(
                self.wall(),
                self.progress.iteration,
                float(self.progress.epoch),
                float(row["val_accuracy_mean"]),
                float(row["val_loss_mean"]),
                "epoch",
            )
        )
        now = self.wall()
        self.last_epoch_s = now - self.epoch_started_at
        self.epoch_started_at = now
        self.budget_spent = self._over_budget()

    def probe(self, iteration: int = 0) -> None:
        losses, accs, _, _ = self.evaluate_split(self.tasks.val, f"probe {iteration}")
        self.record(
            Point(
                self.wall(),
                iteration,
                iteration / self.cfg.total_iter_per_epoch,
                mean_std(accs)[0],
                mean_std(losses)[0],
                "probe",
            )
        )

    def record(self, point: Point) -> None:
        self.points.append(point)
        self.loads.append(os.getloadavg())
        if self.is_writer:
            write_text_atomic(self.curve_path, points_csv(self.points))


# ------------------------------------------------------------------- overlays
def read_curve(path: Path, label: str, iters_per_epoch: int) -> Curve:
    """A curve from this script's CSV or a (metasuite or reference) summary_statistics.csv."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise UserError(f"--overlay {path}: cannot read it ({exc.strerror or exc})") from None
    curve = Curve(label)
    columns = set(rows[0]) if rows else set()
    try:
        if {"wall_s", "iteration", "val_accuracy"} <= columns:
            for r in rows:
                curve.wall_s.append(float(r["wall_s"]))
                curve.iteration.append(float(r["iteration"]))
                curve.accuracy.append(float(r["val_accuracy"]))
            return curve
        time_column = next((c for c in ("epoch_time_s", "epoch_run_time") if c in columns), None)
        if time_column is None or "val_accuracy_mean" not in columns:
            raise UserError(
                f"--overlay {path}: expected columns wall_s, iteration, val_accuracy (this "
                "script's CSV) or val_accuracy_mean with epoch_time_s (metasuite) or "
                "epoch_run_time (reference MAML++) "
                f"(found: {', '.join(sorted(columns)) or 'no rows'})"
            )
        clock = 0.0
        for n, r in enumerate(rows, start=1):
            clock += float(r[time_column])
            curve.wall_s.append(clock)
            curve.iteration.append(float(n * iters_per_epoch))
            curve.accuracy.append(float(r["val_accuracy_mean"]))
    except ValueError as exc:
        raise UserError(f"--overlay {path}: a value is not a number ({exc})") from None
    return curve


def curve_of(points: list[Point], label: str) -> Curve:
    return Curve(
        label,
        [p.wall_s for p in points],
        [float(p.iteration) for p in points],
        [p.val_accuracy for p in points],
    )


def figure(
    curves: list[Curve], title: str, log_iterations: bool = False, ymin: float | None = None
) -> Figure:
    """Accuracy (%) against wall-clock minutes (left) and meta-iterations (right).

    ``log_iterations`` puts the iteration axis on a symlog scale (linear up to 250, the
    default validation interval, so iteration 0 stays on it): methods whose iterations
    cost 6x less than MAML++'s run 6x longer, and on a linear axis MAML++'s whole curve
    is squeezed into the left sixth. ``ymin`` cuts the accuracy axis from below, to
    read differences of a point near the top.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for n, curve in enumerate(curves):
        ys = [100 * a for a in curve.accuracy]
        style = {"color": f"C{n % 10}", "linewidth": 1.4, "marker": "o", "markersize": 2.5}
        axes[0].plot([w / 60 for w in curve.wall_s], ys, label=curve.label, **style)
        axes[1].plot(curve.iteration, ys, label=curve.label, **style)
    axes[0].set_xlabel("wall-clock time (minutes)")
    axes[1].set_xlabel("meta-iterations" + (" (log scale)" if log_iterations else ""))
    if log_iterations:
        axes[1].set_xscale("symlog", linthresh=250)
    if ymin is not None:
        axes[0].set_ylim(bottom=ymin)
    axes[0].set_ylabel("validation accuracy (%)")
    axes[1].tick_params(labelleft=True)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4),
               fontsize="small", frameon=False)  # fmt: skip
    fig.suptitle(title)
    return fig


def plot(
    curves: list[Curve],
    path: Path,
    title: str,
    log_iterations: bool = False,
    ymin: float | None = None,
) -> Path:
    """Draw ``figure`` into a PNG, written atomically."""
    buffer = io.BytesIO()
    figure(curves, title, log_iterations, ymin).savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
    return path


def overlays(args: argparse.Namespace) -> list[Curve]:
    paths, labels = args.overlay or [], args.label or []
    if len(labels) > len(paths):
        raise UserError(f"--label: {len(labels)} labels for {len(paths)} --overlay files")
    labels = labels + [Path(p).parent.name or Path(p).stem for p in paths[len(labels) :]]
    return [
        read_curve(Path(p), label, args.overlay_iters_per_epoch)
        for p, label in zip(paths, labels, strict=True)
    ]


# ------------------------------------------------------------------- the run
def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(args.config)
    devices = resolve_devices(args.gpus)
    root = experiments_root(args.experiments_root)
    extra = overlays(args)
    BudgetBuilder.budget_s = args.minutes * 60
    BudgetBuilder.val_every = args.val_every
    BudgetBuilder.instance = None
    load_before = os.getloadavg()
    started = time.monotonic()
    outcome = run_experiment(config, root, devices, quiet=args.quiet, builder_class=BudgetBuilder)
    total_s = time.monotonic() - started
    builder = BudgetBuilder.instance
    exp_path = root / config.experiment_name
    points = read_points(exp_path / CURVE_FILE)
    test_path = exp_path / "test_summary.json"
    test = json.loads(test_path.read_text()) if test_path.exists() else None
    progress = builder.progress if builder is not None else None
    loads = builder.loads if builder is not None else []
    result = {
        "config": str(args.config),
        "experiment": config.experiment_name,
        "experiment_folder": str(exp_path),
        "outcome": Outcome(int(outcome)).name,
        "exit_status": int(outcome),
        "budget_minutes": args.minutes,
        "val_every": args.val_every,
        "train_wall_s": points[-1].wall_s if points else None,
        "this_process_wall_s_incl_test": total_s,
        "iterations": progress.iteration if progress else None,
        "epochs": progress.epoch if progress else None,
        "total_epochs_in_config": config.total_epochs,
        "total_iter_per_epoch": config.total_iter_per_epoch,
        "best_val_accuracy": max((p.val_accuracy for p in points), default=None),
        "test": test,
        "machine": machine(),
        "loadavg_1_5_15_at_start": load_before,
        "loadavg_1min_during": _load_summary([lo[0] for lo in loads]),
        "loadavg_at_end": os.getloadavg(),
        "command": " ".join([sys.executable, *sys.argv]),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = config.experiment_name
    write_text_atomic(out / f"{name}.csv", points_csv(points))
    write_text_atomic(out / f"{name}.json", json.dumps(result, indent=2) + "\n")
    title = f"{name}: {args.minutes:g}-minute budget"
    plot(
        [curve_of(points, name), *extra],
        out / f"{name}.png",
        title,
        args.log_iterations,
        args.ymin,
    )
    return result


def _load_summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "mean": sum(values) / len(values), "max": max(values)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", help="experiment config (JSON)")
    parser.add_argument("--minutes", type=float, help="wall-clock training budget")
    parser.add_argument(
        "--val-every",
        type=int,
        default=DEFAULT_VAL_EVERY,
        metavar="N",
        help=f"validate every N meta-iterations as well as at epoch ends "
        f"(default {DEFAULT_VAL_EVERY}; 0: epoch ends only)",
    )
    parser.add_argument("--gpus", default="cpu", help="'cpu' (default) or one GPU id")
    parser.add_argument("--experiments-root", default=None, metavar="DIR")
    parser.add_argument("--out", default=str(OUT), metavar="DIR")
    parser.add_argument("--overlay", action="append", metavar="CSV")
    parser.add_argument("--label", action="append", metavar="NAME")
    parser.add_argument("--overlay-iters-per-epoch", type=int, default=500, metavar="N")
    parser.add_argument("--plot-only", metavar="PNG", help="only draw the --overlay curves")
    parser.add_argument("--title", default="validation accuracy", help="title of --plot-only")
    parser.add_argument(
        "--log-iterations", action="store_true", help="symlog iteration axis in the plot"
    )
    parser.add_argument(
        "--ymin", type=float, metavar="PERCENT", help="lower end of the plot's accuracy axis"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.plot_only is None and (args.config is None or args.minutes is None):
        parser.error("CONFIG and --minutes are required (or --plot-only PNG --overlay CSV)")
    if args.minutes is not None and not args.minutes > 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}")
    if args.val_every < 0:
        parser.error(f"--val-every must be >= 0, got {args.val_every}")
    if args.ymin is not None and not 0 <= args.ymin < 100:
        parser.error(f"--ymin must be a percentage in [0, 100), got {args.ymin}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.plot_only is not None:
            curves = overlays(args)
            if not curves:
                raise UserError("--plot-only: give at least one --overlay CSV")
            print(plot(curves, Path(args.plot_only), args.title, args.log_iterations, args.ymin))
            return 0
        result = run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    test = result["test"] or {}
    ens, single = test.get("ensemble", {}), test.get("best_single", {})
    print(
        f"{result['experiment']}: {result['iterations']} meta-iterations "
        f"({result['epochs']} epochs) in {result['train_wall_s']:.0f} s; best validation "
        f"{100 * (result['best_val_accuracy'] or 0):.2f}%"
    )
    if ens:
        print(
            f"test: ensemble {100 * ens['accuracy_mean']:.2f} ± {100 * ens['accuracy_ci95']:.2f}%"
            f" (epochs {', '.join(str(shown_epoch(e)) for e in ens['epochs'])}), best single "
            f"{100 * single['accuracy_mean']:.2f} ± {100 * single['accuracy_ci95']:.2f}% "
            f"(epoch {shown_epoch(single['epoch'])}), "
            f"{ens['num_tasks']} tasks"
        )
    print(f"wrote {Path(args.out) / result['experiment']}.{{csv,png,json}}")
    return int(result["exit_status"])


if __name__ == "__main__":
    sys.exit(main())
