"""Shared pytest fixtures. Only ADD fixtures here; document each one in this list.

Session-scoped (built once per test run, shared by every test file):

- ``omniglot_config``: a tiny Omniglot :class:`~metasuite.config.ExperimentConfig` on the
  real data (28x28x1, 5-way 1-shot, 1 query image, 8 filters, 1 inner step, batch of 2);
  vary it with ``metasuite.config.replace(omniglot_config, ...)``. Image settings kept
  as they are reuse the same image cache.
- ``omniglot_tasks``: ``FewShotTasks.from_config(omniglot_config, quiet=True)`` — the real
  Omniglot split 1,150 / 50 / 423 classes. The first run unpacks datasets/omniglot.tar.bz2
  into datasets/omniglot_dataset/ and writes the 28x28 image cache beside it (~15 s on
  2 cores); later runs load the cache (~1 s).
- ``omniglot_folder``: the unpacked real Omniglot folder (a ``Path``), for tests that
  build small data sets from real images (see tests/data_helpers.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from metasuite.config import ExperimentConfig, replace


@pytest.fixture(scope="session")
def omniglot_config() -> ExperimentConfig:
    return replace(
        ExperimentConfig(),
        source="tests/conftest.py",
        experiment_name="test_omniglot_tiny",
        dataset_name="omniglot_dataset",
        dataset_path="omniglot_dataset",
        image_height=28,
        image_width=28,
        image_channels=1,
        num_classes_per_set=5,
        num_samples_per_class=1,
        num_target_samples=1,
        batch_size=2,
        cnn_num_filters=8,
        number_of_training_steps_per_iter=1,
        number_of_evaluation_steps_per_iter=1,
        total_epochs=1,
        total_iter_per_epoch=2,
        num_evaluation_tasks=4,
        num_dataprovider_workers=2,
    )


@pytest.fixture(scope="session")
def omniglot_tasks(omniglot_config: ExperimentConfig):
    from metasuite.data.tasks import FewShotTasks

    return FewShotTasks.from_config(omniglot_config, quiet=True)


@pytest.fixture(scope="session")
def omniglot_folder(omniglot_tasks) -> Path:
    return omniglot_tasks.source.folder
