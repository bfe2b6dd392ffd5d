"""Prototypical Networks (Snell, Swersky, Zemel 2017): classify a query image by its
squared Euclidean distance to each class's prototype, the mean embedding of that
class's support images.

The kernel, :func:`prototype_logits`, is a pure function of embeddings; the embedding is
the backbone without its classifier (:meth:`Backbone.features`). Training is episodic:
Adam (``meta_learning_rate``, the shared cosine schedule) on the mean over tasks of the
query cross-entropy of ``-distance`` logits. There is no inner loop, so nothing is
adapted at evaluation either: prototypes from the support set, probabilities for the
query set, which ensemble like every other learner's.

Batch norm is the reference network's: each forward pass normalises with its own batch's
statistics, the support set and the query set separately (as every learner here
evaluates), in training and at test time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metasuite.config import ExperimentConfig
from metasuite.data.batch import TaskBatch
from metasuite.learner.base import (
    EvalResult,
    LearnerBase,
    SyncGradients,
    SyncStats,
    check_backend,
    eval_result,
    task_accuracy,
)
from metasuite.learner.models import Params


def prototypes(support: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """``[ways, D]``: the mean of the support embeddings ``[NK, D]`` of each label."""
    onehot = F.one_hot(labels, ways).to(support.dtype)  # [NK, N]
    return (onehot.T @ support) / onehot.sum(0).unsqueeze(1)


def prototype_logits(
    support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int
) -> torch.Tensor:
    """Query logits ``[NQ, N]``: minus the squared Euclidean distance of each query
    embedding to each class prototype."""
    protos = prototypes(support, support_y, ways)
    return -(query.unsqueeze(1) - protos.unsqueeze(0)).pow(2).sum(-1)


class ProtoNetSystem(LearnerBase):
    """ProtoNet: the backbone's body as the embedding, Adam on the episodic loss."""

    META_LEARNER = "protonet"

    def __init__(
        self,
        cfg: ExperimentConfig,
        device: torch.device | str = "cpu",
        backend: str | None = None,
    ) -> None:
        self.backend = check_backend(cfg, backend, self.META_LEARNER)
        super().__init__(cfg, device)

    def initial_params(self, generator: torch.Generator) -> Params:
        """The body's parameters (drawn as for MAML with the same seed; the classifier,
        drawn last, is dropped: prototypes take its place)."""
        params = self.net.init_params(generator)
        return {k: v for k, v in params.items() if k not in self.net.head_names}

    def task_logits(self, batch: TaskBatch, t: int) -> torch.Tensor:
        """Query logits ``[NQ, N]`` of task ``t`` (support and query embedded apart)."""
        ways = self.cfg.num_classes_per_set
        with self.net.task_randomness(batch.task_ids[t]):
            support = self.net.features(self.params, batch.support_x[t], 0)
            query = self.net.features(self.params, batch.query_x[t], 0)
        return prototype_logits(support.float(), batch.support_y[t], query.float(), ways)

    def train_step(
        self,
        batch: TaskBatch,
        epoch: int,
        *,
        total_tasks: int | None = None,
        sync_gradients: SyncGradients | None = None,
        sync_stats: SyncStats | None = None,
    ) -> dict[str, float]:
        """One Adam step on the sum of the tasks' query losses divided by
        ``total_tasks``; arguments as :meth:`MamlSystem.train_step` (``sync_stats`` is
        unused: no running statistics are kept)."""
        del sync_stats
        lr = self.start_step(epoch)
        batch = batch.to(self.device)
        with torch.enable_grad(), self._autocast(), self.net.mode(training=True):
            logits = torch.stack([self.task_logits(batch, t) for t in range(len(batch))])
            n = logits.shape[-1]
            losses = F.cross_entropy(
                logits.reshape(-1, n), batch.query_y.reshape(-1), reduction="none"
            ).view(len(batch), -1)
            loss_sum = losses.mean(-1).sum()
        grads = torch.autograd.grad(loss_sum, self.meta_parameters())
        denominator = total_tasks if total_tasks is not None else len(batch)
        self.apply_gradients(list(grads), denominator, sync_gradients)
        return {
            "loss": float(loss_sum.detach()) / len(batch),
            "accuracy": float(task_accuracy(logits.detach(), batch.query_y).mean()),
            "learning_rate": lr,
            "second_order": 0.0,
        }

    def evaluate(self, batch: TaskBatch) -> EvalResult:
        """Prototypes from each task's support set, probabilities for its query set."""
        batch = batch.to(self.device)
        with torch.no_grad(), self._autocast(), self.net.mode(training=False):
            logits = torch.stack([self.task_logits(batch, t) for t in range(len(batch))])
        return eval_result(logits, batch.query_y)


__all__ = [
    "ProtoNetSystem",
    "prototype_logits",
    "prototypes",
]
