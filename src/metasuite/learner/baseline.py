"""The fine-tuning baselines of Chen et al. 2019 ("A Closer Look at Few-shot
Classification"): Baseline and Baseline++.

Training is plain supervised learning: the backbone's body and a classifier over every
label of the training split (:attr:`TaskSampler.num_labels`: its classes, and on
Omniglot each quarter turn of a class as a class of its own, the rule the training
tasks follow) learn with Adam (``meta_learning_rate``, the shared cosine schedule) on
mini-batches of images and their split-wide labels. A mini-batch is the images of a
meta-iteration's training tasks (support and query rows, ``TaskBatch.support_classes``
/ ``query_classes``): the same pipeline, augmentation and seeding as every other
learner, so it is a pure function of (train_seed, iteration) and resumes exactly.

At validation and test time, each task gets a fresh head fitted on its support set with
the body frozen (``finetune_body``: fitted with it), ``finetune_steps`` full-batch SGD
steps (momentum 0.9) at ``finetune_learning_rate``, from one fixed initial head drawn
from ``train_seed`` (every task starts from the same head, so a task's result does not
depend on which batch or rank evaluates it). Baseline's heads are linear; Baseline++'s
are cosine similarities scaled by ``cosine_scale`` (``scale * cos(f, w_c)``, no bias),
in pre-training and fine-tuning alike. Batch norm is the reference network's: each
forward pass normalises with its own batch's statistics (at evaluation, the support
set and the query set apart, as every learner here evaluates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from metasuite.config import ExperimentConfig
from metasuite.data.batch import TaskBatch
from metasuite.learner.base import (
    EvalResult,
    LearnerBase,
    SyncGradients,
    SyncStats,
    check_backend,
    eval_result,
)
from metasuite.learner.models import Params

FINETUNE_MOMENTUM = 0.9
"""SGD momentum of the per-task head fit (Chen et al.'s fine-tuning optimiser)."""


def head_logits(features: torch.Tensor, head: Params, cosine_scale: float | None) -> torch.Tensor:
    """Logits ``[..., n, C]`` of features ``[..., n, D]`` under a head ``{"weight":
    [..., C, D], "bias": [..., C]}``: linear (``cosine_scale`` None) or ``scale *``
    cosine similarity (no bias)."""
    weight = head["weight"]
    if cosine_scale is not None:
        unit_f = F.normalize(features, dim=-1)
        unit_w = F.normalize(weight, dim=-1)
        return cosine_scale * unit_f @ unit_w.transpose(-1, -2)
    return features @ weight.transpose(-1, -2) + head["bias"].unsqueeze(-2)


def finetune(
    logits_of: Callable[[Params], torch.Tensor],
    trainable: Params,
    labels: torch.Tensor,
    steps: int,
    learning_rate: float,
) -> Params:
    """``steps`` full-batch SGD steps (momentum 0.9) on copies of ``trainable``.

    ``logits_of(tensors)`` gives logits ``[T, n, C]`` for labels ``[T, n]``; the loss is
    the sum over the ``T`` tasks of each task's mean cross-entropy, so tasks fitted side
    by side get the gradients they would get alone.
    """
    tensors = {k: v.detach().clone().requires_grad_() for k, v in trainable.items()}
    optimizer = torch.optim.SGD(tensors.values(), lr=learning_rate, momentum=FINETUNE_MOMENTUM)
    with torch.enable_grad():
        for _ in range(steps):
            logits = logits_of(tensors)
            classes = logits.shape[-1]
            loss = (
                F.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1), reduction="none")
                .view(labels.shape)
                .mean(-1)
                .sum()
            )
            grads = torch.autograd.grad(loss, list(tensors.values()))
            for p, g in zip(tensors.values(), grads, strict=True):
                p.grad = g
            optimizer.step()
    return {k: v.detach() for k, v in tensors.items()}


class BaselineSystem(LearnerBase):
    """Baseline: a linear classifier over all training labels, then linear heads."""

    META_LEARNER = "baseline"
    USES_SPLIT_LABELS = True
    COSINE: ClassVar[bool] = False
    """Baseline++: cosine-similarity heads instead of linear ones."""
    CLASSIFIER = "classifier"
    """Prefix of the pre-training classifier's tensors in ``params``."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        device: torch.device | str = "cpu",
        backend: str | None = None,
        *,
        num_labels: int | None = None,
    ) -> None:
        if num_labels is None or num_labels < 1:
            raise ValueError(
                f"{type(self).__name__} needs num_labels, the training split's label "
                "count (TaskSampler.num_labels), to size its classifier"
            )
        self.backend = check_backend(cfg, backend, self.META_LEARNER)
        self.num_labels = int(num_labels)
        super().__init__(cfg, device)  # sets feature_dim (initial_params)
        # One initial fine-tuning head for every task, a function of the seed alone.
        generator = torch.Generator().manual_seed(cfg.train_seed)
        self.initial_head = self._new_head(cfg.num_classes_per_set, generator)

    @property
    def cosine_scale(self) -> float | None:
        return self.cfg.cosine_scale if self.COSINE else None

    def _new_head(self, classes: int, generator: torch.Generator) -> Params:
        weight = torch.empty(classes, self.feature_dim)
        head = {"weight": nn.init.xavier_uniform_(weight, generator=generator)}
        if not self.COSINE:
            head["bias"] = torch.zeros(classes)
        return {k: v.to(self.device) for k, v in head.items()}

    def initial_params(self, generator: torch.Generator) -> Params:
        """The body drawn as for MAML with the same seed (the few-way classifier it draws
        last is dropped), then the classifier over all training labels."""
        drawn = self.net.init_params(generator)
        params = {k: v for k, v in drawn.items() if k not in self.net.head_names}
        self.feature_dim = int(drawn[self.net.head_names[0]].shape[1])
        head = self._new_head(self.num_labels, generator)
        params.update({f"{self.CLASSIFIER}.{k}": v.cpu() for k, v in head.items()})
        return params

    def classifier(self) -> Params:
        """The pre-training classifier as a head dict."""
        prefix = f"{self.CLASSIFIER}."
        return {k[len(prefix) :]: v for k, v in self.params.items() if k.startswith(prefix)}

    # ------------------------------------------------------------------ training
    def train_step(
        self,
        batch: TaskBatch,
        epoch: int,
        *,
        total_tasks: int | None = None,
        sync_gradients: SyncGradients | None = None,
        sync_stats: SyncStats | None = None,
    ) -> dict[str, float]:
        """One Adam step on the tasks' images with their split-wide labels: each task's
        support and query images in one forward pass (its own batch statistics), the
        loss the sum over tasks of each task's mean cross-entropy divided by
        ``total_tasks`` (arguments as :meth:`MamlSystem.train_step`)."""
        del sync_stats
        if batch.support_classes is None or batch.query_classes is None:
            raise ValueError(
                f"{self.META_LEARNER} trains on split-wide labels; this batch has none "
                "(draw it with TaskSampler.batch)"
            )
        lr = self.start_step(epoch)
        batch = batch.to(self.device)
        head = self.classifier()
        losses, correct = [], []
        with torch.enable_grad(), self._autocast(), self.net.mode(training=True):
            for t in range(len(batch)):
                x = torch.cat([batch.support_x[t], batch.query_x[t]])
                assert batch.support_classes is not None and batch.query_classes is not None
                y = torch.cat([batch.support_classes[t], batch.query_classes[t]])
                with self.net.task_randomness(batch.task_ids[t]):
                    features = self.net.features(self.params, x, 0).float()
                logits = head_logits(features, head, self.cosine_scale)
                losses.append(F.cross_entropy(logits, y))
                correct.append((logits.detach().argmax(-1) == y).float().mean())
            loss_sum = torch.stack(losses).sum()
        grads = torch.autograd.grad(loss_sum, self.meta_parameters())
        denominator = total_tasks if total_tasks is not None else len(batch)
        self.apply_gradients(list(grads), denominator, sync_gradients)
        return {
            "loss": float(loss_sum.detach()) / len(batch),
            "accuracy": float(torch.stack(correct).mean()),
            "learning_rate": lr,
            "second_order": 0.0,
        }

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, batch: TaskBatch) -> EvalResult:
        """A fresh head fitted on each task's support set, then the query probabilities."""
        batch = batch.to(self.device)
        cfg, scale = self.cfg, self.cosine_scale
        tasks = range(len(batch))
        with self._autocast(), self.net.mode(training=False):
            if cfg.finetune_body:
                logits = torch.stack([self._finetuned_with_body(batch, t) for t in tasks])
            else:
                with torch.no_grad():
                    support = torch.stack(
                        [self.net.features(self.params, batch.support_x[t], 0) for t in tasks]
                    ).float()
                    query = torch.stack(
                        [self.net.features(self.params, batch.query_x[t], 0) for t in tasks]
                    ).float()
                heads = {
                    k: v.expand(len(batch), *v.shape).clone() for k, v in self.initial_head.items()
                }
                fitted = finetune(
                    lambda h: head_logits(support, h, scale),
                    heads,
                    batch.support_y,
                    cfg.finetune_steps,
                    cfg.finetune_learning_rate,
                )
                with torch.no_grad():
                    logits = head_logits(query, fitted, scale)
        return eval_result(logits.detach(), batch.query_y)

    def _finetuned_with_body(self, batch: TaskBatch, t: int) -> torch.Tensor:
        """Task ``t``'s query logits after fitting its head and a copy of the body."""
        body = {k: v for k, v in self.params.items() if not k.startswith(f"{self.CLASSIFIER}.")}
        head = {f"head.{k}": v.unsqueeze(0) for k, v in self.initial_head.items()}
        scale = self.cosine_scale

        def split(tensors: Params) -> tuple[Params, Params]:
            return (
                {k: v for k, v in tensors.items() if not k.startswith("head.")},
                {k[5:]: v for k, v in tensors.items() if k.startswith("head.")},
            )

        def logits_of(tensors: Params) -> torch.Tensor:
            weights, fitted_head = split(tensors)
            features = self.net.features(weights, batch.support_x[t], 0).float()
            return head_logits(features.unsqueeze(0), fitted_head, scale)

        fitted = finetune(
            logits_of,
            {**body, **head},
            batch.support_y[t].unsqueeze(0),
            self.cfg.finetune_steps,
            self.cfg.finetune_learning_rate,
        )
        weights, fitted_head = split(fitted)
        with torch.no_grad():
            query = self.net.features(weights, batch.query_x[t], 0).float()
            return head_logits(query.unsqueeze(0), fitted_head, scale)[0]


class BaselinePlusPlusSystem(BaselineSystem):
    """Baseline++: cosine-similarity classifier and heads (scale ``cosine_scale``)."""

    META_LEARNER = "baseline_pp"
    COSINE = True


__all__ = [
    "FINETUNE_MOMENTUM",
    "BaselinePlusPlusSystem",
    "BaselineSystem",
    "finetune",
    "head_logits",
]
