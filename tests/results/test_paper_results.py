"""The MAML++ paper's published numbers: found for the paper's method and setting only,
and drawn as a dashed "paper" line on the validation panel of the overlaid curves."""

from __future__ import annotations

import pytest

from metasuite.results.paper_results import PAPER_RESULTS, paper_result
from metasuite.results.plots import SeedCurves, overlay_png
from metasuite.results.report import paper_for
from synthetic_experiments import MAML, make_config


def test_the_table_holds_the_papers_twelve_numbers_as_printed():
    assert len(PAPER_RESULTS) == 12
    assert paper_result("mini-ImageNet", "MAML", 5, 1).text() == "48.70 ± 1.84"
    assert paper_result("Omniglot", "MAML", 20, 5).text() == "98.9 ± 0.2"
    assert paper_result("mini-ImageNet", "MAML++", 5, 5).mean == pytest.approx(68.32)
    assert paper_result("mini-ImageNet", "MAML", 20, 1) is None  # the paper has no 20-way
    assert paper_result("Omniglot", "ANIL", 5, 1) is None


def test_only_the_papers_method_and_setting_have_a_paper_number():
    assert paper_for(make_config("a", 0)).text() == "99.47 ± 0.05"  # MAML++, Omniglot 5w1s
    assert paper_for(make_config("a", 0, **MAML, way=20)).text() == "95.8 ± 0.3"
    da = make_config("a", 0, first_order_to_second_order_epoch=50, total_epochs=100)
    assert paper_for(da).text() == "99.47 ± 0.05"  # the paper's MAML++ anneals the order
    mini = make_config("a", 0, shot=5, dataset_name="mini_imagenet_full_size")
    assert paper_for(mini).text() == "68.32 ± 0.44"
    not_the_papers = [
        make_config("a", 0, second_order=False),  # first order
        make_config("a", 0, **{**MAML, "use_multi_step_loss_optimization": True}),  # MAML + MSL
        make_config("a", 0, **MAML, meta_learner="anil"),
        make_config("a", 0, backbone="resnet12"),
        make_config("a", 0, way=10),  # a way the paper does not report
        make_config("a", 0, dataset_name="cub200"),
    ]
    assert [paper_for(c) for c in not_the_papers] == [None] * len(not_the_papers)


def _drawn_lines(monkeypatch) -> list[list[tuple[str, str, list[float]]]]:
    """Per saved figure, per axes: (label, linestyle, y data) of every line drawn."""
    from matplotlib.figure import Figure

    drawn: list[list[tuple[str, str, list[float]]]] = []
    save = Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        drawn.extend(
            [(line.get_label(), line.get_linestyle(), [float(y) for y in line.get_ydata()])
             for line in ax.lines]
            for ax in self.axes
        )  # fmt: skip
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return drawn


def test_overlay_draws_the_paper_line_on_the_validation_panel_only(monkeypatch):
    drawn = _drawn_lines(monkeypatch)
    rows = [{"epoch": float(e), "train_accuracy_mean": 0.5 + 0.1 * e,
             "val_accuracy_mean": 0.4 + 0.1 * e} for e in range(3)]  # fmt: skip
    methods = [("MAML", [SeedCurves("s0", rows)]), ("ANIL", [SeedCurves("s0", rows)])]
    assert overlay_png(methods, title="t", references={"MAML": 98.7}) is not None
    train, val = drawn
    assert [label for label, _, _ in train] == ["MAML (1 seed)", "ANIL (1 seed)"]
    paper = [(label, style, ys) for label, style, ys in val if label.startswith("paper")]
    assert paper == [("paper: MAML (98.7%, test)", "--", [98.7, 98.7])]

    drawn.clear()
    assert overlay_png(methods, title="t") is not None
    assert not [label for ax in drawn for label, _, _ in ax if label.startswith("paper")]
