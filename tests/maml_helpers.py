"""Tiny learner configs and synthetic task batches shared by the learner tests.

The equivalence tests compare two implementations of the same function, so random
images are enough there; learning is tested on the real Omniglot data.
"""

from __future__ import annotations

import torch

from metasuite.config import ExperimentConfig, replace
from metasuite.data.batch import TaskBatch


def tiny_config(**changes: object) -> ExperimentConfig:
    """A 3-way network small enough that a second-order meta-step takes milliseconds."""
    base = {
        "cnn_num_filters": 6,
        "num_stages": 3,
        "image_height": 12,
        "image_width": 12,
        "num_classes_per_set": 3,
        "num_samples_per_class": 2,
        "num_target_samples": 2,
        "number_of_training_steps_per_iter": 3,
        "number_of_evaluation_steps_per_iter": 3,
        "batch_size": 3,
        "total_epochs": 20,
        "multi_step_loss_num_epochs": 10,
    }
    return replace(ExperimentConfig(), **(base | changes))


def random_batch(cfg: ExperimentConfig, tasks: int | None = None, seed: int = 1) -> TaskBatch:
    """Random images in [0, 1] with balanced, shuffled labels, shaped as cfg says."""
    g = torch.Generator().manual_seed(seed)
    t = tasks or cfg.batch_size
    n, k, q = cfg.num_classes_per_set, cfg.num_samples_per_class, cfg.num_target_samples
    shape = (cfg.image_channels, cfg.image_height, cfg.image_width)

    def labels(per_class: int) -> torch.Tensor:
        base = torch.arange(n).repeat_interleave(per_class)
        return torch.stack([base[torch.randperm(len(base), generator=g)] for _ in range(t)])

    return TaskBatch(
        torch.rand(t, n * k, *shape, generator=g),
        labels(k),
        torch.rand(t, n * q, *shape, generator=g),
        labels(q),
        tuple(range(t)),
    )
