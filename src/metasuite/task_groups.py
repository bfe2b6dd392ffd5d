"""Several tasks' inner loops run as one network of grouped convolutions.

Why: on a 2-core CPU a 20-way Omniglot task spent about 50 ms of a meta-step in
framework overhead (Python, op dispatch, autograd bookkeeping for some ten thousand
small ops), whatever the tensor sizes. T tasks side by side, task t's filters as group
t of every convolution and its batch-norm channels as channels ``t*C`` to
``(t+1)*C``, run each op once for all T, and oneDNN runs a grouped convolution as fast
per group as separate ones. Tasks never mix: every op is per channel group, per task's
images, or a per-task product, so the gradient of the summed loss with respect to
group t is task t's gradient, and the meta-gradient (through
:meth:`metasuite.models.Backbone.widen`) is the sum over tasks, as in the reference
loop (:func:`metasuite.maml.task_loss`), which a test holds this to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from metasuite.maml import StepPlan, inner_update
from metasuite.models import Backbone, Params, StatsRecord


def _summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over tasks of each task's mean cross-entropy; ``logits [T, n, N]``."""
    per_image = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    return per_image.view(labels.shape).mean(1).sum()


def _split_record(pass_record: StatsRecord, tasks: int) -> list[StatsRecord]:
    """One forward pass's wide statistics -> the same pass as each task saw it."""
    out: list[StatsRecord] = [[] for _ in range(tasks)]
    for row, layers in pass_record:
        for t in range(tasks):
            out[t].append((row, [(m.view(tasks, -1)[t], v.view(tasks, -1)[t]) for m, v in layers]))
    return out


def task_group_loss(
    net: Backbone,
    params: Params,
    rates: Params,
    inner_names: Sequence[str],
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    plan: StepPlan,
    records: list[StatsRecord] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`metasuite.maml.task_loss` for T tasks at once (``support_x [T, n, C, H,
    W]``, labels ``[T, n]``): returns the sum of their task losses and their final
    query logits ``[T, nq, N]``. When ``records`` is a list, each task's statistics
    record is appended to it, in task order."""
    tasks = support_x.shape[0]
    wide = net.widen(params, tasks)
    if not plan.differentiable:
        wide = {k: v.detach().requires_grad_(k in inner_names) for k, v in wide.items()}
        rates = {k: v.detach() for k, v in rates.items()}
    stats: StatsRecord | None = [] if records is not None else None
    query_steps = set(plan.query_steps)
    total = support_x.new_zeros(())
    logits = support_x.new_zeros(())
    support, query = net.prepare(support_x), net.prepare(query_x)
    for step in range(plan.num_steps):
        support_logits = net.forward(wide, support, step, stats, tasks)
        support_loss = _summed_cross_entropy(support_logits, support_y)
        inner = [wide[n] for n in inner_names]
        grads = torch.autograd.grad(
            support_loss, inner, create_graph=plan.second_order and plan.differentiable
        )
        wide = inner_update(wide, grads, rates, inner_names, step)
        if not plan.differentiable:
            wide = {
                k: (v.detach().requires_grad_() if k in inner_names else v) for k, v in wide.items()
            }
        if step in query_steps:
            logits = net.forward(wide, query, step, stats, tasks)
            weight = plan.loss_weights[step]
            if weight != 0.0:
                total = total + weight * _summed_cross_entropy(logits, query_y)
    if records is not None and stats is not None:
        per_task: list[StatsRecord] = [[] for _ in range(tasks)]
        for one_pass in stats:
            for t, task_pass in enumerate(_split_record([one_pass], tasks)):
                per_task[t].extend(task_pass)
        records.extend(per_task)
    return total, logits


__all__ = ["task_group_loss"]
