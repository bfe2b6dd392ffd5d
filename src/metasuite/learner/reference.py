"""MAML / MAML++ as pure functions over parameter dicts, plus the per-task reference loop.

Everything here is a function of its arguments: the meta-parameters (``params``), the
per-step inner learning rates (``rates``, LSLR) and a :class:`StepPlan` saying how many
inner steps to take, whether to keep the second-order graph and how to weight each
step's query loss (MSL). :func:`task_loss` is the ground truth that every faster
backend (:mod:`metasuite.learner.backends`) is tested against;
:mod:`metasuite.learner.system` is the thin stateful shell around them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from metasuite.config import ExperimentConfig
from metasuite.data.batch import TaskBatch
from metasuite.errors import ConfigError
from metasuite.learner.models import Backbone, Params, StatsRecord

MSL_FLOOR = 0.03
"""Non-final MSL weights never fall below MSL_FLOOR / steps (reference value)."""


def msl_weights(num_steps: int, msl_epochs: int, epoch: int) -> list[float]:
    """The per-step query-loss importance vector of MSL at ``epoch``.

    Uniform ``1/S`` at epoch 0; each non-final weight falls by ``1/(S*msl_epochs)``
    per epoch to a floor of ``0.03/S``; the final weight rises so the sum stays 1
    (the reference's ``get_per_step_loss_importance_vector``).
    """
    s = num_steps
    if msl_epochs <= 0:
        return [0.0] * (s - 1) + [1.0]
    decay = 1.0 / s / msl_epochs
    floor = MSL_FLOOR / s
    weights = [max(1.0 / s - epoch * decay, floor) for _ in range(s - 1)]
    last = min(1.0 / s + epoch * (s - 1) * decay, 1.0 - (s - 1) * floor)
    return [*weights, last]


@dataclass(frozen=True)
class StepPlan:
    """How one inner loop runs: the static part of a meta-step."""

    num_steps: int
    second_order: bool
    loss_weights: tuple[float, ...]
    """Weight of the query loss after each step; 0 where that loss is not computed."""
    differentiable: bool = True
    """False for evaluation: no graph back to the meta-parameters is kept."""

    def __post_init__(self) -> None:
        if len(self.loss_weights) != self.num_steps:
            raise ValueError("one loss weight per inner step")

    @property
    def query_steps(self) -> tuple[int, ...]:
        """Steps after which the query set is evaluated (always the final one)."""
        last = self.num_steps - 1
        return tuple(s for s, w in enumerate(self.loss_weights) if w != 0.0 or s == last)


def train_plan(cfg: ExperimentConfig, epoch: int) -> StepPlan:
    """The plan of a training meta-step at ``epoch``: MSL and DA switch by epoch."""
    steps = cfg.number_of_training_steps_per_iter
    if cfg.use_multi_step_loss_optimization and epoch < cfg.multi_step_loss_num_epochs:
        weights = tuple(msl_weights(steps, cfg.multi_step_loss_num_epochs, epoch))
    else:
        weights = (0.0,) * (steps - 1) + (1.0,)
    return StepPlan(steps, cfg.use_second_order(epoch), weights)


def eval_plan(cfg: ExperimentConfig) -> StepPlan:
    """Evaluation: first order, final-step query loss only, evaluation step count."""
    steps = cfg.number_of_evaluation_steps_per_iter
    return StepPlan(steps, False, (0.0,) * (steps - 1) + (1.0,), differentiable=False)


def inner_parameter_names(net: Any, cfg: ExperimentConfig) -> tuple[str, ...]:
    """What the inner loop adapts: the backbone's default (conv/linear weights and
    biases; the norm affine parameters only with enable_inner_loop_optimizable_bn_params),
    or the parameters ``inner_loop_parameters`` names by shell pattern."""
    if cfg.inner_loop_parameters is None:
        return tuple(net.adaptable_parameter_names(cfg.enable_inner_loop_optimizable_bn_params))
    return select_parameters(net.parameter_names(), cfg.inner_loop_parameters, cfg.backbone)


def select_parameters(
    names: Sequence[str], patterns: Sequence[str], backbone: str
) -> tuple[str, ...]:
    """The names any of ``patterns`` matches (``fnmatchcase``), in ``names`` order; a
    pattern that matches nothing is a ConfigError, never an empty inner loop."""
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ConfigError(
                f"inner_loop_parameters: {pattern!r} matches no parameter of backbone "
                f"{backbone!r} (its parameters: {shown})"
            )
    return tuple(n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def init_rates(inner_names: Sequence[str], num_steps: int, init_lr: float) -> Params:
    """LSLR: one inner learning rate per adapted tensor per step, all ``init_lr``."""
    return {name: torch.full((num_steps,), float(init_lr)) for name in inner_names}


def rate_at(rates: torch.Tensor, step: int) -> torch.Tensor:
    """The rate of ``step``; steps beyond the trained ones reuse the last rate."""
    return rates[min(step, rates.shape[0] - 1)]


def inner_update(
    params: Params, grads: Sequence[torch.Tensor], rates: Params, names: Sequence[str], step: int
) -> Params:
    """One SGD step on the adapted tensors: ``theta - lr[name][step] * grad``."""
    new = dict(params)
    for name, g in zip(names, grads, strict=True):
        new[name] = params[name] - rate_at(rates[name], step) * g
    return new


class Network(Protocol):
    """What :func:`adapt` runs: the reference :class:`Backbone` (one task, images ``[n,
    C, H, W]``, logits ``[n, N]``) or a network laying several tasks out side by side
    (:class:`metasuite.learner.fast.network.FastBackbone`: logits ``[T, n, N]``)."""

    def forward(
        self, params: Params, x: Any, step: int, stats: StatsRecord | None = None
    ) -> torch.Tensor: ...


SupportLoss = Callable[[Params], tuple[torch.Tensor, StatsRecord | None]]
"""The support loss as a function of the adapted tensors, with the statistics record of
its forward pass (None when none is kept)."""

InnerGradient = Callable[[SupportLoss, Params, bool], tuple[Params, StatsRecord | None]]
"""``(support_loss, inner, create_graph) -> (d support_loss / d inner, its record)``:
how :func:`adapt` differentiates the support loss. With ``create_graph`` false the
gradient is a constant of the outer loop (first order, evaluation)."""


def autograd_gradient(
    support_loss: SupportLoss, inner: Params, create_graph: bool
) -> tuple[Params, StatsRecord | None]:
    """:data:`InnerGradient` by ``torch.autograd.grad`` (the loop and grouped backends).

    Without ``create_graph`` the loss is taken at detached copies of ``inner``: the
    gradient has the same value, no graph back to the meta-parameters is built for it,
    and evaluation needs no parameter to require a gradient.
    """
    if not create_graph:
        inner = {k: v.detach().requires_grad_() for k, v in inner.items()}
    loss, record = support_loss(inner)
    grads = torch.autograd.grad(loss, list(inner.values()), create_graph=create_graph)
    return dict(zip(inner, grads, strict=True)), record


def task_loss(
    net: Backbone,
    params: Params,
    rates: Params,
    inner_names: Sequence[str],
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    plan: StepPlan,
    stats: StatsRecord | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt to one task's support set; return (weighted query loss, final logits)."""
    return adapt(
        net, params, rates, inner_names, support_x, support_y, query_x, query_y, plan, stats
    )


def adapt(
    net: Network,
    params: Params,
    rates: Params,
    inner_names: Sequence[str],
    support: Any,
    support_y: torch.Tensor,
    query: Any,
    query_y: torch.Tensor,
    plan: StepPlan,
    stats: StatsRecord | None = None,
    gradient: InnerGradient = autograd_gradient,
    adapted: Params | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MAML++ inner loop, the one every backend and meta-learner runs.

    At step ``s`` the support loss under step-``s`` parameters gives the gradient
    (kept differentiable for second order), the update uses ``lr[name][s]``, and the
    query loss of the updated parameters (norm row ``s``) enters the task loss with
    weight ``plan.loss_weights[s]``. ``support``/``query`` are images as ``net.forward``
    takes them. With a network of T tasks side by side, labels are ``[T, n]`` and the
    loss is the sum of the T task losses. ``gradient`` differentiates the support loss:
    ``torch.autograd.grad`` by default, ``torch.func.grad`` under ``torch.func.vmap``.
    When ``adapted`` is a dict it receives the parameters after the last step (Reptile
    moves the meta-parameters toward them).
    """
    if not plan.differentiable:
        params = {k: v.detach() for k, v in params.items()}
        rates = {k: v.detach() for k, v in rates.items()}
    create_graph = plan.second_order and plan.differentiable
    query_steps = set(plan.query_steps)
    total = next(iter(params.values())).new_zeros(())
    logits = total
    for step in range(plan.num_steps):

        def support_loss(
            inner: Params, current: Params = params, step: int = step
        ) -> tuple[torch.Tensor, StatsRecord | None]:
            record: StatsRecord | None = [] if stats is not None else None
            out = net.forward({**current, **inner}, support, step, record)
            return summed_cross_entropy(out, support_y), record

        grads, record = gradient(support_loss, {n: params[n] for n in inner_names}, create_graph)
        if stats is not None and record is not None:
            stats.extend(record)
        params = inner_update(params, [grads[n] for n in inner_names], rates, inner_names, step)
        if step in query_steps:
            logits = net.forward(params, query, step, stats)
            weight = plan.loss_weights[step]
            if weight != 0.0:
                total = total + weight * summed_cross_entropy(logits, query_y)
    if adapted is not None:
        adapted.update(params)
    return total, logits


def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One task's mean cross-entropy (``logits [n, N]``), or the sum over tasks of each
    task's mean (``logits [T, n, N]``, labels ``[T, n]``)."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, labels)
    per_image = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    return per_image.view(labels.shape).mean(1).sum()


def meta_loss_loop(
    net: Backbone,
    params: Params,
    rates: Params,
    inner_names: Sequence[str],
    batch: TaskBatch,
    plan: StepPlan,
    records: list[StatsRecord] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference backend: a Python loop over tasks.

    Returns the SUM over tasks of the task losses (the caller divides by the number of
    tasks in the whole meta-batch) and the final query logits ``[T, NQ, N]``.
    """
    losses, logits = [], []
    for t in range(len(batch)):
        stats: StatsRecord | None = [] if records is not None else None
        with net.task_randomness(batch.task_ids[t]):
            loss, out = task_loss(
                net,
                params,
                rates,
                inner_names,
                batch.support_x[t],
                batch.support_y[t],
                batch.query_x[t],
                batch.query_y[t],
                plan,
                stats,
            )
        losses.append(loss)
        logits.append(out.detach())
        if records is not None and stats is not None:
            records.append(stats)
    return torch.stack(losses).sum(), torch.stack(logits)


__all__ = [
    "MSL_FLOOR",
    "InnerGradient",
    "Network",
    "StepPlan",
    "SupportLoss",
    "adapt",
    "autograd_gradient",
    "eval_plan",
    "init_rates",
    "inner_parameter_names",
    "inner_update",
    "meta_loss_loop",
    "msl_weights",
    "rate_at",
    "select_parameters",
    "summed_cross_entropy",
    "task_loss",
    "train_plan",
]
