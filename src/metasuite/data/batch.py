"""The task batch: the one value that flows from the data sampler to the learner."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TaskBatch:
    """``T`` few-shot tasks of ``N`` classes, ``K`` support and ``Q`` query images each.

    Images are float32 in [0, 1]; labels are 0..N-1 within each task. ``task_ids``
    are the global task indexes, so a batch can be traced back to (seed, index).
    """

    support_x: torch.Tensor  # float32 [T, N*K, C, H, W]
    support_y: torch.Tensor  # int64   [T, N*K]
    query_x: torch.Tensor  # float32 [T, N*Q, C, H, W]
    query_y: torch.Tensor  # int64   [T, N*Q]
    task_ids: tuple[int, ...]
    support_classes: torch.Tensor | None = None
    """int64 ``[T, N*K]``: each support row's label among all the split's labels (its
    class in the split, times 4 plus its quarter turns where the split is rotated), for
    learners that pre-train a classifier over every training class; None when unknown."""
    query_classes: torch.Tensor | None = None
    """int64 ``[T, N*Q]``: the same for the query rows."""

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(
            self.support_x.to(device, non_blocking=True),
            self.support_y.to(device, non_blocking=True),
            self.query_x.to(device, non_blocking=True),
            self.query_y.to(device, non_blocking=True),
            self.task_ids,
            _to(self.support_classes, device),
            _to(self.query_classes, device),
        )

    def select(self, rows: slice | list[int]) -> TaskBatch:
        """A sub-batch (e.g. one rank's share of a meta-batch)."""
        ids = (
            self.task_ids[rows]
            if isinstance(rows, slice)
            else tuple(self.task_ids[i] for i in rows)
        )
        return TaskBatch(
            self.support_x[rows],
            self.support_y[rows],
            self.query_x[rows],
            self.query_y[rows],
            ids,
            None if self.support_classes is None else self.support_classes[rows],
            None if self.query_classes is None else self.query_classes[rows],
        )


def _to(tensor: torch.Tensor | None, device: torch.device | str) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device, non_blocking=True)
