"""Few-shot tasks as pure functions of (seed, split, task index).

Task ``i`` of a split is drawn from its own generator, ``numpy.random.default_rng([seed,
split_tag, i])``: there is no sampler state to save, so a resumed run, a second process
or another rank gets exactly the same task ``i`` (for the same numpy version). The
builder asks for training tasks ``it * batch_size + b`` and evaluation tasks
``0..num_evaluation_tasks-1`` (see docs/DESIGN.md).

Per task: ``N`` distinct classes in random order (class ``j`` gets label ``j``, so labels
are a random permutation of the classes), ``K + Q`` distinct images per class (``K``
support, ``Q`` query). Omniglot training classes are rotated by ``k·90°`` (``k`` drawn per
class per task), which makes each rotation a new class, as in the reference code; like
the reference, validation and test tasks are never rotated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metasuite.config import ExperimentConfig
from metasuite.data.batch import TaskBatch
from metasuite.data.folders import SPLITS, DataSource, SplitData, load_splits
from metasuite.data.split_tags import SPLIT_TAGS, split_seeds
from metasuite.errors import ConfigError, DatasetError
from metasuite.text import plural


@dataclass(frozen=True)
class TaskPlan:
    """What task ``index`` is made of (numpy, before any pixels are touched)."""

    index: int
    classes: np.ndarray  # int64 [N]: class ids in the split, label j = classes[j]
    images: np.ndarray  # int64 [N, K+Q]: image rows; the first K of each class are support
    rotations: np.ndarray  # int64 [N]: quarter turns per class (all 0 when not rotating)


class TaskSampler:
    """Draws the few-shot tasks of one split; stateless apart from its fixed settings."""

    def __init__(
        self,
        data: SplitData,
        *,
        split: str,
        seed: int,
        ways: int,
        shots: int,
        queries: int,
        rotate: bool,
    ) -> None:
        if split not in SPLIT_TAGS:
            raise ValueError(f"split must be one of {list(SPLIT_TAGS)}, got {split!r}")
        if seed < 0:
            raise ConfigError(f"the {split} seed must be >= 0, got {seed}")
        if data.num_classes < ways:
            raise DatasetError(
                f"the {split} split has {plural(data.num_classes, 'class')}, fewer than "
                f"num_classes_per_set={ways}; use fewer ways or a larger {split} split"
            )
        sizes = data.class_sizes().numpy()
        per_class = shots + queries
        if len(sizes) and sizes.min() < per_class:
            worst = int(sizes.argmin())
            raise DatasetError(
                f"class {data.class_names[worst]!r} of the {split} split has {int(sizes[worst])} "
                f"images, fewer than num_samples_per_class + num_target_samples = {per_class}"
            )
        height, width = data.images.shape[-2:]
        if rotate and height != width:
            raise ConfigError(
                f"rotation augmentation needs square images, got image_height={height}, "
                f"image_width={width}"
            )
        self.data = data
        self.split = split
        self.seed = seed
        self.ways, self.shots, self.queries = ways, shots, queries
        self.rotate = rotate
        self._offsets = data.class_offsets.numpy()
        self._sizes = sizes
        self._uniform = bool(len(sizes)) and bool((sizes == sizes[0]).all())
        grid = torch.arange(height * width).view(height, width)
        self._turn_perms = torch.stack(
            [torch.rot90(grid, k, dims=(0, 1)).reshape(-1) for k in range(4)]
        )  # [4, H*W]: where each output pixel of a k-quarter-turn comes from

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def turns_per_class(self) -> int:
        """4 where each quarter turn of a class is a class of its own (rotated Omniglot
        training tasks, as in the reference), else 1."""
        return 4 if self.rotate else 1

    @property
    def num_labels(self) -> int:
        """How many distinct labels a classifier over all of this split's classes needs
        (the range of :attr:`TaskBatch.support_classes`)."""
        return self.num_classes * self.turns_per_class

    def plan(self, index: int) -> TaskPlan:
        """The classes, images and rotations of task ``index`` — a pure function of it."""
        if index < 0:
            raise ValueError(f"task index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, SPLIT_TAGS[self.split], index])
        classes = rng.choice(self.num_classes, size=self.ways, replace=False)
        rotations = rng.integers(0, 4, size=self.ways)  # drawn always: same images either way
        sizes = self._sizes[classes]
        longest = int(sizes.max())
        keys = rng.random((self.ways, longest))
        if not self._uniform:
            keys[np.arange(longest)[None, :] >= sizes[:, None]] = 2.0  # never chosen
        picks = np.argsort(keys, axis=1, kind="stable")[:, : self.shots + self.queries]
        images = self._offsets[classes][:, None] + picks
        if not self.rotate:
            rotations = np.zeros_like(rotations)
        return TaskPlan(int(index), classes.astype(np.int64), images.astype(np.int64), rotations)

    def batch(self, indices: Iterable[int]) -> TaskBatch:
        """Tasks ``indices`` as one :class:`TaskBatch` (float32 images in [0, 1])."""
        plans = [self.plan(int(i)) for i in indices]
        if not plans:
            raise ValueError("batch() needs at least one task index")
        ways, shots, queries = self.ways, self.shots, self.queries
        rows = torch.from_numpy(np.stack([p.images for p in plans]).reshape(-1))
        pixels = self.data.images.index_select(0, rows)  # [T*N*S, C, H, W], one gather
        if self.rotate:
            # A quarter turn is a fixed permutation of the H*W pixels: one more gather.
            turns = np.repeat(np.stack([p.rotations for p in plans]), shots + queries, axis=1)
            count, channels, height, width = pixels.shape
            perm = self._turn_perms.index_select(0, torch.from_numpy(turns.reshape(-1)))
            pixels = torch.gather(
                pixels.view(count, channels, height * width),
                2,
                perm.unsqueeze(1).expand(count, channels, height * width),
            ).view(count, channels, height, width)
        pixels = pixels.to(torch.float32).div_(255.0)
        pixels = pixels.view(len(plans), ways, shots + queries, *pixels.shape[1:])
        image_shape = pixels.shape[3:]
        support_x = pixels[:, :, :shots].reshape(len(plans), ways * shots, *image_shape)
        query_x = pixels[:, :, shots:].reshape(len(plans), ways * queries, *image_shape)
        labels = torch.arange(ways, dtype=torch.int64)
        support_y = labels.repeat_interleave(shots).expand(len(plans), -1).contiguous()
        query_y = labels.repeat_interleave(queries).expand(len(plans), -1).contiguous()
        # Each task class's label among all the split's labels: class * turns + its turns.
        classes = torch.from_numpy(
            np.stack([p.classes * self.turns_per_class + p.rotations for p in plans])
        )
        return TaskBatch(
            support_x,
            support_y,
            query_x,
            query_y,
            tuple(p.index for p in plans),
            classes.repeat_interleave(shots, dim=1),
            classes.repeat_interleave(queries, dim=1),
        )

    def task(self, index: int) -> TaskBatch:
        """Task ``index`` alone (a batch of one)."""
        return self.batch([index])


def train_indices(iteration: int, batch_size: int) -> range:
    """Training task indexes of meta-iteration ``iteration`` (DESIGN.md: it*batch_size+b)."""
    return range(iteration * batch_size, (iteration + 1) * batch_size)


@dataclass(frozen=True)
class FewShotTasks:
    """The train/val/test task samplers of one experiment, built from its config."""

    train: TaskSampler
    val: TaskSampler
    test: TaskSampler
    source: DataSource

    @classmethod
    def from_config(
        cls,
        config: ExperimentConfig,
        root: Path | None = None,
        quiet: bool = False,
        experiment: Path | None = None,
    ) -> FewShotTasks:
        """Locate (and on first use unpack and decode) the data set, then build samplers.

        Seeds: train_seed, val_seed, effective_test_seed. Rotation: Omniglot training
        tasks only. ``experiment``: the experiment folder (text experiments read the
        tokenizer an earlier run kept there; images need nothing from it).
        """
        if config.modality == "text":  # the text modality's twin (token-id tasks)
            from metasuite.data.text.sampler import FewShotTextTasks

            return FewShotTextTasks.from_config(  # type: ignore[return-value]
                config, root, quiet=quiet, experiment=experiment
            )
        splits, source = load_splits(config, root, quiet=quiet)
        seeds = split_seeds(config)
        samplers = {
            split: TaskSampler(
                splits[split],
                split=split,
                seed=seeds[split],
                ways=config.num_classes_per_set,
                shots=config.num_samples_per_class,
                queries=config.num_target_samples,
                rotate=config.is_omniglot and split == "train",
            )
            for split in SPLITS
        }
        return cls(samplers["train"], samplers["val"], samplers["test"], source)

    def sampler(self, split: str) -> TaskSampler:
        if split not in SPLIT_TAGS:
            raise ValueError(f"split must be one of {list(SPLIT_TAGS)}, got {split!r}")
        return getattr(self, split)

    @property
    def split_hash(self) -> str:
        """sha256 over the class names of each split: which classes trained and tested."""
        names = {split: list(self.sampler(split).data.class_names) for split in SPLITS}
        return hashlib.sha256(json.dumps(names, separators=(",", ":")).encode()).hexdigest()

    @property
    def class_counts(self) -> dict[str, int]:
        return {split: self.sampler(split).num_classes for split in SPLITS}


__all__ = ["SPLIT_TAGS", "FewShotTasks", "TaskPlan", "TaskSampler", "train_indices"]
