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
from collections.abc import Sequence
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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
    return path


__all__ = ["CURVES", "SeedCurves", "plot_learning_curves"]
