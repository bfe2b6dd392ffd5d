"""Learning-curve plots from plain rows: the band over seeds, by hand; a real PNG."""

from __future__ import annotations

import pytest
from PIL import Image

from metasuite.results.plots import SeedCurves, _band, plot_learning_curves


def test_band_is_mean_and_std_over_seeds():
    epochs, means, stds = _band([([0, 1, 2], [10.0, 20.0, 30.0]), ([0, 1], [20.0, 40.0])])
    assert epochs == [0, 1]  # epoch 2 has one seed only
    assert means == [15.0, 30.0]
    # sample std (ddof=1): (5^2 + 5^2) / 1 and (10^2 + 10^2) / 1
    assert stds == pytest.approx([50**0.5, 200**0.5])


def _rows(accuracies: list[tuple[float, float]]) -> list[dict[str, float]]:
    return [
        {"epoch": float(e), "train_accuracy_mean": train, "val_accuracy_mean": val}
        for e, (train, val) in enumerate(accuracies)
    ]


def test_plain_rows_make_a_png_and_no_rows_make_none(tmp_path):
    seeds = [
        SeedCurves("seed 0", _rows([(0.5, 0.4), (0.7, 0.6), (0.8, 0.7)])),
        SeedCurves("seed 1 (running)", _rows([(0.55, 0.5), (0.75, 0.62)])),
    ]
    path = plot_learning_curves(seeds, tmp_path / "p.png", title="Omniglot 5-way", subtitle="x")
    assert path == tmp_path / "p.png"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    nan_only = [SeedCurves("seed 0", [{"epoch": 0.0, "val_accuracy_mean": float("nan")}])]
    assert plot_learning_curves(nan_only, tmp_path / "q.png", title="t") is None
    assert not (tmp_path / "q.png").exists()


def test_x_axis_counts_epochs_from_one(tmp_path, monkeypatch):
    """Rows store the 0-based epoch index; the plot reads as the log does: 1 = the first."""
    from matplotlib.figure import Figure

    drawn = []
    save = Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        drawn.extend(list(line.get_xdata()) for ax in self.axes for line in ax.lines)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    seeds = [SeedCurves("seed 0", _rows([(0.5, 0.4), (0.7, 0.6), (0.8, 0.7)]))]
    assert plot_learning_curves(seeds, tmp_path / "p.png", title="t") is not None
    assert drawn and all([float(x) for x in xs] == [1.0, 2.0, 3.0] for xs in drawn)
