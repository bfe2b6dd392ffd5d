"""Few-shot text tasks as pure functions of (seed, split, task index).

Same contract as the image tasks (:mod:`metasuite.data.tasks`): task ``i`` is drawn from
``numpy.random.default_rng([seed, split_tag, i])``, so resume, ranks and evaluation see
the same task ``i`` with no sampler state. A task is drawn from a *pool* of label
groups:

- ``class`` unit: one pool, every class of the split (N-way K-shot over disjoint
  classes);
- ``domain`` unit: one pool per domain (its labels); a task picks a domain, then N of
  its labels.

The N chosen groups come in random order, so label ``j`` of a task is a random class
(labels shuffled per task). Examples are token ids, ``int64 [T, n, L]`` padded with the
tokenizer's pad id to the longest example of the batch (dynamic padding); the text
backbones build their attention mask as ``ids != pad_id``.
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
from metasuite.data.folders import SPLITS, DataSource
from metasuite.data.split_tags import SPLIT_TAGS, split_seeds
from metasuite.data.text.load import TextData, load_text, split_units, unit_names
from metasuite.data.text.tokenizer import KEPT_FOLDER, save_tokenizer
from metasuite.errors import DatasetError
from metasuite.text import plural


@dataclass(frozen=True)
class TextSplit:
    """The rows of one split grouped as pools of label groups."""

    pool_names: tuple[str, ...]
    group_names: tuple[tuple[str, ...], ...]  # per pool: its groups' labels
    groups: tuple[tuple[np.ndarray, ...], ...]  # per pool, per group: row indexes

    @property
    def num_classes(self) -> int:
        return sum(len(g) for g in self.group_names)

    @property
    def num_rows(self) -> int:
        return sum(len(rows) for pool in self.groups for rows in pool)


def group_split(config: ExperimentConfig, data: TextData, units: list[str]) -> TextSplit:
    """The pools of the rows whose unit (class or domain name) is in ``units``."""
    names = unit_names(config, data.labels, data.domains, data.splits)
    wanted = set(units)
    by_pool: dict[str, dict[str, list[int]]] = {}
    for row, (unit, label) in enumerate(zip(names, data.labels, strict=True)):
        if unit in wanted:
            pool = unit if config.task_unit == "domain" else ""
            by_pool.setdefault(pool, {}).setdefault(label, []).append(row)
    pools = sorted(by_pool)
    return TextSplit(
        tuple(pools),
        tuple(tuple(sorted(by_pool[p])) for p in pools),
        tuple(
            tuple(np.asarray(by_pool[p][g], dtype=np.int64) for g in sorted(by_pool[p]))
            for p in pools
        ),
    )


class TextTaskSampler:
    """Draws the few-shot text tasks of one split; stateless apart from its settings."""

    def __init__(
        self,
        data: TextSplit,
        ids: torch.Tensor,
        offsets: torch.Tensor,
        pad_id: int,
        *,
        split: str,
        seed: int,
        ways: int,
        shots: int,
        queries: int,
        where: Path,
    ) -> None:
        per_class = shots + queries
        if not data.pool_names:
            raise DatasetError(f"{where}: the {split} split is empty; adjust the split settings")
        for pool, labels, groups in zip(
            data.pool_names, data.group_names, data.groups, strict=True
        ):
            what = f"domain {pool!r}" if pool else f"the {split} split"
            if pool and len(labels) < 2:
                raise DatasetError(
                    f"{where}: {what} has a single label ({labels[0]!r}); a domain task needs "
                    "at least 2 labels"
                )
            if len(labels) < ways:
                raise DatasetError(
                    f"{where}: {what} has {plural(len(labels), 'class')}, fewer than "
                    f"num_classes_per_set={ways}; use fewer ways or another split"
                )
            for label, rows in zip(labels, groups, strict=True):
                if len(rows) < per_class:
                    owner = f" of domain {pool!r}" if pool else f" of the {split} split"
                    raise DatasetError(
                        f"{where}: class {label!r}{owner} has {plural(len(rows), 'example')}, "
                        f"fewer than num_samples_per_class + num_target_samples = {per_class}"
                    )
        self.data = data
        self.split, self.seed = split, seed
        self.ways, self.shots, self.queries = ways, shots, queries
        self.ids, self.offsets, self.pad_id = ids, offsets, pad_id

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def plan(self, index: int) -> np.ndarray:
        """Row indexes ``[N, K+Q]`` of task ``index`` (class j gets label j)."""
        if index < 0:
            raise ValueError(f"task index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, SPLIT_TAGS[self.split], index])
        pool = int(rng.integers(len(self.data.groups))) if len(self.data.groups) > 1 else 0
        groups = self.data.groups[pool]
        chosen = rng.choice(len(groups), size=self.ways, replace=False)
        return np.stack(
            [
                groups[c][rng.choice(len(groups[c]), self.shots + self.queries, replace=False)]
                for c in chosen
            ]
        )

    def batch(self, indices: Iterable[int]) -> TaskBatch:
        """Tasks ``indices`` as one :class:`TaskBatch` of int64 token ids."""
        index_list = [int(i) for i in indices]
        if not index_list:
            raise ValueError("batch() needs at least one task index")
        rows = np.stack([self.plan(i) for i in index_list])  # [T, N, K+Q]
        flat = rows.reshape(-1)
        starts, ends = self.offsets[flat], self.offsets[flat + 1]
        lengths = ends - starts
        longest = int(lengths.max())
        tokens = torch.full((len(flat), longest), self.pad_id, dtype=torch.int64)
        for r, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            tokens[r, : e - s] = self.ids[s:e]
        t, n, s = rows.shape
        tokens = tokens.view(t, n, s, longest)
        support_x = tokens[:, :, : self.shots].reshape(t, n * self.shots, longest)
        query_x = tokens[:, :, self.shots :].reshape(t, n * self.queries, longest)
        labels = torch.arange(n, dtype=torch.int64)
        support_y = labels.repeat_interleave(self.shots).expand(t, -1).contiguous()
        query_y = labels.repeat_interleave(self.queries).expand(t, -1).contiguous()
        return TaskBatch(support_x, support_y, query_x, query_y, tuple(index_list))

    def task(self, index: int) -> TaskBatch:
        return self.batch([index])


@dataclass(frozen=True)
class FewShotTextTasks:
    """The train/val/test text samplers of one experiment (FewShotTasks' twin)."""

    train: TextTaskSampler
    val: TextTaskSampler
    test: TextTaskSampler
    source: DataSource
    data: TextData
    units: dict[str, list[str]]
    unit: str
    max_length: int

    @classmethod
    def from_config(
        cls,
        config: ExperimentConfig,
        root: Path | None = None,
        quiet: bool = False,
        experiment: Path | None = None,
    ) -> FewShotTextTasks:
        """The samplers; ``experiment`` (its folder) supplies a tokenizer kept there."""
        data, source = load_text(config, root, quiet=quiet, experiment=experiment)
        names = unit_names(config, data.labels, data.domains, data.splits)
        units = split_units(config, names, source.folder, data.listing.pre_split)
        seeds = split_seeds(config)
        samplers = {
            split: TextTaskSampler(
                group_split(config, data, units[split]),
                data.ids,
                data.offsets,
                data.tokenizer.pad_id,
                split=split,
                seed=seeds[split],
                ways=config.num_classes_per_set,
                shots=config.num_samples_per_class,
                queries=config.num_target_samples,
                where=data.listing.root,
            )
            for split in SPLITS
        }
        return cls(
            samplers["train"],
            samplers["val"],
            samplers["test"],
            source,
            data,
            units,
            config.task_unit,
            config.max_length,
        )

    def sampler(self, split: str) -> TextTaskSampler:
        if split not in SPLIT_TAGS:
            raise ValueError(f"split must be one of {list(SPLIT_TAGS)}, got {split!r}")
        return getattr(self, split)

    @property
    def split_hash(self) -> str:
        """sha256 over each split's units and the tokenizer: which classes (or domains)
        trained and tested, and with which token ids."""
        record = {"units": self.units, "tokenizer": self.data.tokenizer.digest}
        return hashlib.sha256(json.dumps(record, separators=(",", ":")).encode()).hexdigest()

    def save_artifacts(self, folder: Path) -> None:
        """Keep the tokenizer in the experiment folder (``tokenizer/``), so the token ids
        of a run can be read back and checked against the manifest's sha256."""
        save_tokenizer(self.data.tokenizer, folder / KEPT_FOLDER)

    @property
    def text_record(self) -> dict[str, object]:
        """What the manifest records of a text data set (beside the split hash)."""
        tok = self.data.tokenizer
        return {
            "layout": self.data.listing.layout,
            "pre_split": self.data.listing.pre_split,
            "task_unit": self.unit,
            "max_length": self.max_length,
            "tokenizer": {
                "source": tok.source,
                "sha256": tok.digest,
                "vocab_size": tok.vocab_size,
                "pad_id": tok.pad_id,
            },
        }

    @property
    def class_counts(self) -> dict[str, int]:
        return {split: self.sampler(split).num_classes for split in SPLITS}


__all__ = ["FewShotTextTasks", "TextSplit", "TextTaskSampler", "group_split"]
