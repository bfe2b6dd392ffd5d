"""Interchangeable implementations of the meta-batch loss, and the rule choosing one.

Every backend is a function ``(net, params, rates, inner_names, batch, plan, records)
-> (sum of task losses, final query logits [T, NQ, N])`` computing exactly what the
reference loop (:func:`metasuite.maml.meta_loss_loop`) computes; they differ only in
how the work is laid out for the hardware. A test holds each to the loop to 1e-5.

- ``loop``: per-task Python loop with ``torch.autograd.grad`` (the reference).
- ``vmap``: ``torch.func.vmap`` over tasks with ``torch.func.grad`` in the inner loop.
  On a GPU this turns batch_size x steps small launches into a few batched kernels;
  on a CPU the per-task weights become grouped convolutions, which are slower.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from metasuite.data.batch import TaskBatch
from metasuite.errors import ConfigError
from metasuite.maml import StepPlan, inner_update, meta_loss_loop
from metasuite.models import Backbone, Params, StatsRecord

MetaLossFn = Callable[
    [Backbone, Params, Params, Sequence[str], TaskBatch, StepPlan, list[StatsRecord] | None],
    tuple[torch.Tensor, torch.Tensor],
]


def meta_loss_vmap(
    net: Backbone,
    params: Params,
    rates: Params,
    inner_names: Sequence[str],
    batch: TaskBatch,
    plan: StepPlan,
    records: list[StatsRecord] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loop's computation, vmapped over the tasks of the batch."""
    if not plan.differentiable:
        params = {k: v.detach() for k, v in params.items()}
        rates = {k: v.detach() for k, v in rates.items()}
    names = tuple(inner_names)
    want_stats = records is not None and net.per_step_stats
    query_steps = set(plan.query_steps)

    def one_task(
        sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def support_loss(
            inner: Params, current: Params, step: int
        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
            stats: StatsRecord = []
            logits = net.forward({**current, **inner}, sx, step, stats if want_stats else None)
            return F.cross_entropy(logits, sy), _flatten_stats(stats)

        current = dict(params)
        total = sx.new_zeros(())
        logits = sx.new_zeros(())
        collected: list[torch.Tensor] = []
        for step in range(plan.num_steps):
            inner = {n: current[n] for n in names}
            grads, stats = torch.func.grad(support_loss, has_aux=True)(inner, current, step)
            collected += stats
            g = [grads[n] for n in names]
            if not (plan.second_order and plan.differentiable):
                g = [t.detach() for t in g]
            current = inner_update(current, g, rates, names, step)
            if step in query_steps:
                qstats: StatsRecord = []
                logits = net.forward(current, qx, step, qstats if want_stats else None)
                collected += _flatten_stats(qstats)
                weight = plan.loss_weights[step]
                if weight != 0.0:
                    total = total + weight * F.cross_entropy(logits, qy)
        stacked = torch.stack(collected) if collected else sx.new_zeros((0,))
        return total, logits, stacked

    losses, logits, stats = torch.func.vmap(one_task)(
        batch.support_x, batch.support_y, batch.query_x, batch.query_y
    )
    if want_stats and records is not None:
        records.extend(_unflatten_stats(net, plan, stats))
    return losses.sum(), logits.detach()


def _flatten_stats(stats: StatsRecord) -> list[torch.Tensor]:
    """One forward pass's statistics as tensors [L, 2, C] (vmap outputs must be tensors)."""
    return [torch.stack([torch.stack(pair) for pair in layers]) for _, layers in stats]


def _unflatten_stats(net: Backbone, plan: StepPlan, stats: torch.Tensor) -> list[StatsRecord]:
    """Per-task records from vmap's ``[T, passes, L, 2, C]``, in the loop's pass order."""
    rows: list[int] = []
    for step in range(plan.num_steps):
        rows.append(net.norm_step(step))
        if step in plan.query_steps:
            rows.append(net.norm_step(step))
    out: list[StatsRecord] = []
    for task in stats.detach():
        out.append([(row, [(p[0], p[1]) for p in task[i]]) for i, row in enumerate(rows)])
    return out


BACKENDS: dict[str, MetaLossFn] = {
    "loop": meta_loss_loop,
    "vmap": meta_loss_vmap,
}

# Measured defaults (bench/meta_step.py): see resolve_backend.
_AUTO = {"cpu": "loop", "cuda": "vmap"}


def resolve_backend(name: str, device: torch.device) -> str:
    """The backend to run: ``auto`` means the fastest measured for the device type."""
    if name == "auto":
        return _AUTO.get(device.type, "loop")
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of auto, {', '.join(BACKENDS)}; got {name!r}")
    return name


__all__ = ["BACKENDS", "MetaLossFn", "meta_loss_vmap", "resolve_backend"]
