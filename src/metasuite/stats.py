"""Summary statistics for per-iteration and per-task results.

Conventions, fixed here so every table in the project means the same thing:

- ``mean_std``: the *sample* standard deviation (``ddof=1``), everywhere: the spread
  over seeds in the report's tables and the plots' bands, and the per-epoch spread over
  meta-iterations and validation tasks in ``summary_statistics.csv``. Seeds, iterations
  and tasks are all samples of something larger, and a table over 3 seeds must not
  understate its spread by a factor sqrt(3/2). (The reference MAML++ code writes numpy's
  ``ddof=0`` into its summary statistics: with hundreds of iterations or tasks per epoch
  the two differ by well under 1%.) With fewer than two values the std is undefined: NaN.
- ``mean_ci95``: the half-width of the normal-approximation 95% confidence interval
  of the mean, ``1.96 * s / sqrt(n)``, with ``s`` the *sample* standard deviation
  (``ddof=1``), since the tasks are a sample from the task distribution. With a
  single value the interval is undefined and reported as 0.

Computed in float64 with numpy over Python floats, so the same inputs give the same
bits whether a run was interrupted or not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

Z95 = 1.96


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``); NaN where undefined (no values:
    both; one value: the std)."""
    if len(values) == 0:
        return math.nan, math.nan
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 1:
        return float(arr[0]), math.nan
    return float(arr.mean()), float(arr.std(ddof=1))


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% confidence half-width ``1.96 * sample std / sqrt(n)``."""
    if len(values) == 0:
        raise ValueError("mean_ci95 of no values")
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 1:
        return float(arr[0]), 0.0
    return float(arr.mean()), float(Z95 * arr.std(ddof=1) / math.sqrt(arr.size))


def per_task_accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Accuracy of each task from query probabilities ``[T, Q, N]`` and labels ``[T, Q]``."""
    if probabilities.shape[:2] != labels.shape:
        raise ValueError(
            f"probabilities {tuple(probabilities.shape)} do not match labels {tuple(labels.shape)}"
        )
    correct = probabilities.argmax(dim=-1).eq(labels.to(probabilities.device))
    return correct.double().mean(dim=1).tolist()


__all__ = ["Z95", "mean_ci95", "mean_std", "per_task_accuracy"]
