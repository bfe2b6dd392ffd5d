"""Learning-curve figures for a group of seeds (PNG, matplotlib's Agg renderer).

The Agg canvas is attached to each figure directly instead of going through pyplot, so
plotting never depends on (or changes) a global backend and works on machines without
a display. The PNG is rendered to memory and written atomically.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metasuite.fsutil import write_bytes_atomic

if TYPE_CHECKING:
    from metasuite.results.report import Group

CURVES: tuple[tuple[str, str], ...] = (
    ("train_accuracy_mean", "Training accuracy"),
    ("val_accuracy_mean", "Validation accuracy"),
)


def _series(rows: list[dict[str, float]], column: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        x, y = row.get("epoch", math.nan), row.get(column, math.nan)
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
        v = by_epoch[x]
        m = sum(v) / len(v)
        means.append(m)
        stds.append(math.sqrt(sum((y - m) ** 2 for y in v) / (len(v) - 1)))
    return epochs, means, stds


def plot_learning_curves(group: Group, path: Path) -> Path | None:
    """Train and validation accuracy per epoch, one line per seed plus the mean band.

    Returns the PNG's path, or None when no member has a finished epoch to draw.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from metasuite.results.report import dataset_title

    if not any(_series(m.curves, column)[0] for m in group.members for column, _ in CURVES):
        return None
    fig = Figure(figsize=(11, 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    colors = [f"C{i % 10}" for i in range(len(group.members))]
    longest = max(len(m.curves) for m in group.members)
    for ax, (column, title) in zip(axes, CURVES, strict=True):
        series = []
        for member, color in zip(group.members, colors, strict=True):
            xs, ys = _series(member.curves, column)
            if not xs:
                continue
            series.append((xs, ys))
            suffix = "" if member.has_results else f" ({member.status.state})"
            ax.plot(
                xs,
                ys,
                color=color,
                linewidth=1.2,
                alpha=0.8,
                marker="o" if longest <= 20 else None,
                markersize=3,
                label=f"seed {group.seed_label(member)}{suffix}",
            )
        epochs, means, stds = _band(series)
        if epochs:
            low = [m - s for m, s in zip(means, stds, strict=True)]
            high = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(epochs, low, high, color="0.5", alpha=0.25, linewidth=0,
                            label="mean ± std over seeds")  # fmt: skip
            ax.plot(epochs, means, color="black", linewidth=2, linestyle="--", label="mean")
        ax.set_title(title)
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
    total, done = len(group.members), len(group.finished)
    title = f"{dataset_title(group.dataset)} {group.way}-way {group.shot}-shot — {group.method}"
    # Long labels (a method disambiguated by its settings) wrap instead of running off.
    fig.suptitle(
        "\n".join(textwrap.wrap(title, 95))
        + f"\n{total} seed{'s' if total != 1 else ''}, {done} with test results",
        fontsize="large",
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
    return path
