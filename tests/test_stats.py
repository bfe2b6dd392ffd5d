"""metasuite.stats: the one definition of every summary statistic, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from metasuite.stats import mean_ci95, mean_std, per_task_accuracy


def test_mean_ci95_uses_sample_std() -> None:
    values = [0.2, 0.4, 0.4, 1.0, 0.6]
    mean, ci = mean_ci95(values)
    assert mean == pytest.approx(0.52)
    # sum of squared deviations 0.368 over n - 1 = 4
    assert ci == pytest.approx(1.96 * math.sqrt(0.368 / 4) / math.sqrt(5))
    assert mean_ci95([0.7]) == (0.7, 0.0)


def test_mean_std_is_the_sample_std_and_nan_where_undefined() -> None:
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))  # 2 / (n - 1)
    mean, std = mean_std([0.2, 0.4, 0.4, 1.0, 0.6])
    assert (mean, std) == (pytest.approx(0.52), pytest.approx(math.sqrt(0.368 / 4)))
    mean, std = mean_std([0.7])
    assert mean == 0.7 and math.isnan(std)
    assert all(math.isnan(x) for x in mean_std([]))


def test_per_task_accuracy_from_probabilities() -> None:
    probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.7, 0.3]]], dtype=torch.float64)
    labels = torch.tensor([[0, 1], [1, 0]])
    assert per_task_accuracy(probs, labels) == [1.0, 0.5]
