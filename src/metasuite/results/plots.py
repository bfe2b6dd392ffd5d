"""Learning-curve figures for a group of seeds (PNG, matplotlib's Agg renderer).

Plots take plain rows (:class:`SeedCurves`: a legend label and the rows of one
``summary_statistics.csv``), not the report's types, so the report imports plots and
never the other way round; anything that has the rows can draw them.

The Agg canvas is attached to each figure directly instead of going through pyplot, so
plotting never depends on (or changes) a global backend and works on machines without
a display. The PNG is rendered to memory and written atomically.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metasuite.fsutil import write_bytes_atomic
from metasuite.stats import mean_std
from metasuite.text import shown_epoch


@dataclass(frozen=True)
class SeedCurves:
    """One seed's learning curves: the legend label and its per-epoch summary rows
    (``epoch`` plus the :data:`CURVES` columns; missing or NaN cells are skipped)."""

    label: str
    rows: list[dict[str, float]]


CURVES: tuple[tuple[str, str], ...] = (
    ("train_accuracy_mean", "Training accuracy"),
    ("val_accuracy_mean", "Validation accuracy"),
)


def _series(rows: list[dict[str, float]], column: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        # Stored epochs are 0-based; the x axis counts as the log does (1 = first epoch).
        x, y = shown_epoch(row.get("epoch", math.nan)), row.get(column, math.nan)
        if math.isfinite(x) and math.isfinite(y):
            xs.append(x)
            ys.append(100 * y)
    return xs, ys


def _band(
    series: list[tuple[list[float], list[float]]],
) -> tuple[list[float], list[float], list[float]]:
    """Mean and ± one sample std over seeds, at the epochs that at least two seeds reached."""
    by_epoch: dict[float, list[float]] = {}
    for xs, ys in series:
        for x, y in zip(xs, ys, strict=True):
            by_epoch.setdefault(x, []).append(y)
    epochs = sorted(x for x, v in by_epoch.items() if len(v) >= 2)
    means, stds = [], []
    for x in epochs:
        mean, std = mean_std(by_epoch[x])
        means.append(mean)
        stds.append(std)
    return epochs, means, stds


def plot_learning_curves(
    seeds: Sequence[SeedCurves], path: Path, *, title: str, subtitle: str = ""
) -> Path | None:
    """Train and validation accuracy per epoch, one line per seed plus the mean band.

    ``title`` (wrapped when long) and ``subtitle`` head the figure. Returns the PNG's
    path, or None when no seed has a finished epoch to draw.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not any(_series(seed.rows, column)[0] for seed in seeds for column, _ in CURVES):
        return None
    fig = Figure(figsize=(11, 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    colors = [f"C{i % 10}" for i in range(len(seeds))]
    longest = max(len(seed.rows) for seed in seeds)
    for ax, (column, panel_title) in zip(axes, CURVES, strict=True):
        series = []
        for seed, color in zip(seeds, colors, strict=True):
            xs, ys = _series(seed.rows, column)
            if not xs:
                continue
            series.append((xs, ys))
            ax.plot(
                xs,
                ys,
                color=color,
                linewidth=1.2,
                alpha=0.8,
                marker="o" if longest <= 20 else None,
                markersize=3,
                label=seed.label,
            )
        epochs, means, stds = _band(series)
        if epochs:
            low = [m - s for m, s in zip(means, stds, strict=True)]
            high = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(epochs, low, high, color="0.5", alpha=0.25, linewidth=0,
                            label="mean ± std over seeds")  # fmt: skip
            ax.plot(epochs, means, color="black", linewidth=2, linestyle="--", label="mean")
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        if ax is axes[0]:
            ax.set_ylabel("accuracy (%)")
        ax.tick_params(labelleft=True)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if not series:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    # One legend for both panels, below them, so it never hides a curve.
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(
            list(legend.values()),
            list(legend),
            loc="outside lower center",
            ncol=min(len(legend), 6),
            fontsize="small",
            frameon=False,
        )
    # Long labels (a method disambiguated by its settings) wrap instead of running off.
    lines = [*textwrap.wrap(title, 95), *([subtitle] if subtitle else [])]
    fig.suptitle("\n".join(lines), fontsize="large")
    write_bytes_atomic(path, _png(fig))
    return path


def _figure(width: float, height: float) -> Any:
    """A figure on its own Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _legend_below(fig: Any, axes: Sequence[Any], columns: int = 6) -> None:
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside lower center",
                   ncol=min(len(legend), columns), fontsize="small", frameon=False)  # fmt: skip


def overlay_png(
    methods: Sequence[tuple[str, Sequence[SeedCurves]]],
    *,
    title: str,
    subtitle: str = "",
    references: Mapping[str, float] | None = None,
) -> bytes | None:
    """The methods of one setting on the same axes: per method the mean over its seeds
    (a line) and mean ± one sample std over seeds (a band, where two seeds reached an
    epoch), train and validation accuracy side by side. None when nothing has an epoch.

    One method per colour, so MAML against MAML++ is seen at a glance, which the
    per-group figures of :func:`plot_learning_curves` (one method each) cannot show.
    ``references`` maps a method's label to a published accuracy in percent (the
    paper's test figure): a dashed line in the method's colour, labelled "paper", on the
    validation panel only, since training accuracy is not what the paper reports.
    """
    from matplotlib.ticker import MaxNLocator

    if not any(_series(s.rows, c)[0] for _, seeds in methods for s in seeds for c, _ in CURVES):
        return None
    fig = _figure(11, 4.4)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (column, panel_title) in zip(axes, CURVES, strict=True):
        for i, (label, seeds) in enumerate(methods):
            series = [xy for xy in (_series(s.rows, column) for s in seeds) if xy[0]]
            if not series:
                continue
            color = f"C{i % 10}"
            epochs, means, stds = _band(series)
            if not epochs:  # one seed: its own curve is the mean
                epochs, means, stds = series[0][0], series[0][1], [math.nan] * len(series[0][0])
            n = len(series)
            ax.plot(epochs, means, color=color, linewidth=1.8,
                    marker="o" if len(epochs) <= 20 else None, markersize=3,
                    label=f"{label} ({n} seed{'s' if n != 1 else ''})")  # fmt: skip
            if any(math.isfinite(x) for x in stds):
                low = [m - d for m, d in zip(means, stds, strict=True)]
                high = [m + d for m, d in zip(means, stds, strict=True)]
                ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
        shown = (references or {}) if column == "val_accuracy_mean" else {}
        for i, (label, _) in enumerate(methods):
            if label in shown:
                value = shown[label]
                ax.axhline(value, color=f"C{i % 10}", linestyle="--", linewidth=1.2,
                           label=f"paper: {label} ({value:g}%, test)")  # fmt: skip
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelleft=True)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("accuracy (%) — band: mean ± std over seeds")
    _legend_below(fig, axes, columns=3)
    fig.suptitle("\n".join([*textwrap.wrap(title, 95), *([subtitle] if subtitle else [])]))
    return _png(fig)


def inner_loop_png(rows: Sequence[dict[str, Any]], *, title: str) -> bytes | None:
    """MAML++'s learned diagnostics over epochs from the metrics log's val records: the
    LSLR inner rates, one panel per inner step with a line per adapted tensor, and the
    MSL weights (a line per step). None when the records carry neither."""
    from matplotlib.ticker import MaxNLocator

    lslr = [(shown_epoch(r["epoch"]), r["lslr"]) for r in rows if r.get("lslr")]
    msl = [(shown_epoch(r["epoch"]), r["msl_weights"]) for r in rows if r.get("msl_weights")]
    if not lslr and not msl:
        return None
    steps = max((len(v) for _, rates in lslr for v in rates.values()), default=0)
    panels = steps + (1 if msl else 0)
    fig = _figure(min(3.0 * panels + 1, 20), 3.6)
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    names = list(dict.fromkeys(name for _, rates in lslr for name in rates))
    for k in range(steps):
        ax = axes[k]
        for i, name in enumerate(names):
            xs = [e for e, rates in lslr if len(rates.get(name, ())) > k]
            ys = [rates[name][k] for _, rates in lslr if len(rates.get(name, ())) > k]
            ax.plot(xs, ys, color=f"C{i % 10}", linestyle="-" if i < 10 else "--",
                    linewidth=1.3, label=name)  # fmt: skip
        ax.set_title(f"LSLR rate, inner step {k + 1}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    if msl:
        ax = axes[-1]
        for k in range(len(msl[0][1])):
            label = f"MSL weight, step {k + 1}"
            ax.plot([e for e, _ in msl], [w[k] for _, w in msl], marker="o", markersize=3,
                    label=label, color=f"C{k % 10}", linestyle=":")  # fmt: skip
        ax.set_title("MSL weights")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    _legend_below(fig, axes)
    fig.suptitle(title)
    return _png(fig)


__all__ = ["CURVES", "SeedCurves", "inner_loop_png", "overlay_png", "plot_learning_curves"]
