"""The split tag and seed of each task, shared by the image and text samplers."""

from __future__ import annotations

from metasuite.config import ExperimentConfig

SPLIT_TAGS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
"""Mixed into each task's seed so train task i and val task i differ even with one seed."""


def split_seeds(config: ExperimentConfig) -> dict[str, int]:
    """Each split's task seed: train_seed, val_seed and the effective test seed."""
    return {
        "train": config.train_seed,
        "val": config.val_seed,
        "test": config.effective_test_seed,
    }


__all__ = ["SPLIT_TAGS", "split_seeds"]
