"""Several tasks' inner loops run as one network of grouped convolutions.

Why: on a 2-core CPU a 20-way Omniglot task spent about 50 ms of a meta-step in
framework overhead (Python, op dispatch, autograd bookkeeping for some ten thousand
small ops), whatever the tensor sizes. T tasks side by side, task t's filters as group
t of every convolution and its batch-norm channels as channels ``t*C`` to
``(t+1)*C``, run each op once for all T, and oneDNN runs a grouped convolution as fast
per group as separate ones. Tasks never mix: every op is per channel group, per task's
images, or a per-task product, so the gradient of the summed loss with respect to
group t is task t's gradient, and the meta-gradient (through
:meth:`metasuite.learner.fast.network.FastBackbone.widen`) is the sum over tasks, as in
the reference loop, whose inner loop (:func:`metasuite.learner.reference.adapt`) this
runs on the wide network; a test holds it to :func:`metasuite.learner.reference.task_loss`
task by task.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metasuite.learner.fast.network import FastBackbone
from metasuite.learner.models import Backbone, Params, StatsRecord
from metasuite.learner.reference import StepPlan, adapt


def _split_record(record: StatsRecord, tasks: int) -> list[StatsRecord]:
    """Wide statistics, pass by pass -> the same passes as each task saw them."""
    out: list[StatsRecord] = [[] for _ in range(tasks)]
    for row, layers in record:
        for t in range(tasks):
            out[t].append((row, [(m.view(tasks, -1)[t], v.view(tasks, -1)[t]) for m, v in layers]))
    return out


def widen_rates(wide: FastBackbone, rates: Params) -> Params:
    """Inner rates for the wide network. Per-tensor rates (``[S]``, MAML/LSLR) are
    scalars per step and broadcast as they are; per-element rates (``[S, *shape]``,
    Meta-SGD) are widened step by step like the tensors they scale, so the gradient of
    a rate sums over the tasks, as the meta-gradient of the parameters does."""
    out: Params = {}
    for name, rate in rates.items():
        if rate.dim() == 1:
            out[name] = rate
        else:
            out[name] = torch.stack([wide.widen({name: r})[name] for r in rate.unbind(0)])
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
    """:func:`metasuite.learner.reference.task_loss` for T tasks at once (``support_x [T, n, C, H,
    W]``, labels ``[T, n]``): returns the sum of their task losses and their final
    query logits ``[T, nq, N]``. When ``records`` is a list, each task's statistics
    record is appended to it, in task order."""
    tasks = support_x.shape[0]
    wide = FastBackbone(net, tasks)
    stats: StatsRecord | None = [] if records is not None else None
    support, query = wide.prepare(support_x), wide.prepare(query_x)
    total, logits = adapt(
        wide,
        wide.widen(params),
        widen_rates(wide, rates),
        inner_names,
        support,
        support_y,
        query,
        query_y,
        plan,
        stats,
    )
    if records is not None and stats is not None:
        records.extend(_split_record(stats, tasks))
    return total, logits


__all__ = ["task_group_loss", "widen_rates"]
