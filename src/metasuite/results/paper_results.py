"""The MAML++ paper's published test accuracies, to show beside a suite's own numbers.

Source: Antreas Antoniou, Harrison Edwards, Amos Storkey, "How to train your MAML",
ICLR 2019 (arXiv:1810.09502), Table 1 (Omniglot) and Table 2 (mini-ImageNet): the rows
"MAML" (which the paper quotes from Finn et al., 2017) and "MAML++". Means and ± are as
printed there, in percent; the paper's ± is not recomputed or reinterpreted here, so
read it as the paper's spread, not as the report's 95% interval over seeds. The four
values docs/results.md quotes in its "Paper (full protocol)" column (Omniglot 5- and
20-way 1-shot, MAML and MAML++) are the same.

A group is the paper's when it is the paper's method on the paper's setting: MAML or
MAML++ (:func:`metasuite.results.report.method_label`, second order; the paper's MAML++
anneals the derivative order, so "MAML++ (DA)" counts too), the reference conv net on
images, Omniglot or mini-ImageNet, a way/shot the paper reports. Budgets (epochs,
iterations) and sizes are not compared: a shortened run of the paper's configuration is
still measured against where the full protocol ends, which is the point of showing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from metasuite.config import ExperimentConfig


@dataclass(frozen=True)
class PaperResult:
    """One published test accuracy: mean and ± in percent, as printed (``decimals``
    keeps the printed precision: 48.70 is not 48.7 in a table that quotes it)."""

    mean: float
    spread: float
    decimals: int

    def text(self) -> str:
        """'99.47 ± 0.05', with the paper's own number of decimals."""
        return f"{self.mean:.{self.decimals}f} ± {self.spread:.{self.decimals}f}"


def _printed(mean: str, spread: str) -> PaperResult:
    return PaperResult(float(mean), float(spread), len(mean.partition(".")[2]))


CITATION = "Antoniou et al., How to train your MAML, ICLR 2019, Tables 1-2"

PAPER_RESULTS: dict[tuple[str, str, int, int], PaperResult] = {
    ("Omniglot", "MAML", 5, 1): _printed("98.7", "0.4"),
    ("Omniglot", "MAML", 5, 5): _printed("99.9", "0.1"),
    ("Omniglot", "MAML", 20, 1): _printed("95.8", "0.3"),
    ("Omniglot", "MAML", 20, 5): _printed("98.9", "0.2"),
    ("Omniglot", "MAML++", 5, 1): _printed("99.47", "0.05"),
    ("Omniglot", "MAML++", 5, 5): _printed("99.93", "0.09"),
    ("Omniglot", "MAML++", 20, 1): _printed("97.65", "0.05"),
    ("Omniglot", "MAML++", 20, 5): _printed("99.33", "0.03"),
    # The MAML rows are Finn et al.'s (2017), which the MAML++ paper quotes: 48.70 ± 1.84
    # (± 1.75 belongs to their first-order row, 48.07).
    ("mini-ImageNet", "MAML", 5, 1): _printed("48.70", "1.84"),
    ("mini-ImageNet", "MAML", 5, 5): _printed("63.11", "0.92"),
    ("mini-ImageNet", "MAML++", 5, 1): _printed("52.15", "0.26"),
    ("mini-ImageNet", "MAML++", 5, 5): _printed("68.32", "0.44"),
}
"""(data set title, method, way, shot) -> the published test accuracy."""

PAPER_METHODS: dict[str, str] = {"MAML": "MAML", "MAML++": "MAML++", "MAML++ (DA)": "MAML++"}
"""The report's method labels that are the paper's methods, and the paper's name."""


def paper_result(dataset: str, method: str, way: int, shot: int) -> PaperResult | None:
    """The paper's number for a data set title ("Omniglot", "mini-ImageNet"), a method
    label as :func:`~metasuite.results.report.method_label` gives it, way and shot;
    None where the paper has none."""
    name = PAPER_METHODS.get(method)
    return None if name is None else PAPER_RESULTS.get((dataset, name, way, shot))


def is_paper_setup(config: ExperimentConfig) -> bool:
    """The paper's network and modality: the reference conv net on images, MAML family."""
    return (config.meta_learner, config.backbone, config.modality) == ("maml", "conv", "image")


__all__ = ["CITATION", "PAPER_RESULTS", "PaperResult", "is_paper_setup", "paper_result"]
