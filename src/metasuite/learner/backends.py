"""Interchangeable implementations of the meta-batch loss and gradient, and the rule
choosing one.

Every backend is a function ``(net, params, rates, inner_names, batch, plan, records,
wrt) -> MetaBatchResult``: the sum over tasks of the task losses, the final query
logits and, when ``wrt`` is given, the gradient of that sum with respect to ``wrt``.
They compute exactly what the reference loop (:func:`metasuite.learner.reference.meta_loss_loop`)
computes and differ only in how the work is laid out for the hardware; a test holds
each to the loop to 1e-5.

- ``loop``: per-task Python loop with ``torch.autograd.grad`` (the reference).
- ``vmap``: ``torch.func.vmap`` over tasks with ``torch.func.grad`` in the inner loop.
  On a GPU this turns batch_size x steps small launches into a few batched kernels; on
  a CPU the per-task weights become grouped convolutions, which are slower.
- ``threads``: the per-task loop spread over a pool of threads, one intra-op thread
  each, with each task's outer backward run in its own thread. The ops of one small
  task parallelise poorly inside an op; whole tasks parallelise perfectly. Each
  task's graph is freed after its backward, so it also needs less memory.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metasuite.data.batch import TaskBatch
from metasuite.errors import ConfigError
from metasuite.learner.fast.task_groups import task_group_loss
from metasuite.learner.models import Backbone, Params, StatsRecord
from metasuite.learner.reference import StepPlan, inner_update, meta_loss_loop, task_loss


@dataclass(frozen=True)
class MetaBatchResult:
    """What a backend returns for one meta-batch."""

    loss_sum: torch.Tensor
    """Detached scalar: the sum over tasks of the (MSL-weighted) task losses."""
    logits: torch.Tensor
    """Detached final query logits ``[T, NQ, N]``."""
    grads: list[torch.Tensor] | None
    """d(loss_sum)/d(wrt), zeros where a tensor is unused; None when not asked for."""


Backend = Callable[
    [
        Backbone,
        Params,
        Params,
        Sequence[str],
        TaskBatch,
        StepPlan,
        list[StatsRecord] | None,
        Sequence[torch.Tensor] | None,
    ],
    MetaBatchResult,
]


def _gradients(loss: torch.Tensor, wrt: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, list(wrt), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(wrt, grads, strict=True)]


# ---------------------------------------------------------------------------- loop
def loop_backend(
    net: Backbone,
    params: Params,
    rates: Params,
    inner_names: Sequence[str],
    batch: TaskBatch,
    plan: StepPlan,
    records: list[StatsRecord] | None = None,
    wrt: Sequence[torch.Tensor] | None = None,
) -> MetaBatchResult:
    """The reference: every task's graph is kept, then one backward of the sum."""
    loss, logits = meta_loss_loop(net, params, rates, inner_names, batch, plan, records)
    grads = _gradients(loss, wrt) if wrt is not None else None
    return MetaBatchResult(loss.detach(), logits, grads)


# ---------------------------------------------------------------------------- vmap
def vmap_backend(
    net: Backbone,
    params: Params,
    rates: Params,
    inner_names: Sequence[str],
    batch: TaskBatch,
    plan: StepPlan,
    records: list[StatsRecord] | None = None,
    wrt: Sequence[torch.Tensor] | None = None,
) -> MetaBatchResult:
    """The loop's computation, vmapped over the tasks of the batch."""
    net = dataclasses.replace(net, composite_norm=True)
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
    loss = losses.sum()
    grads = _gradients(loss, wrt) if wrt is not None else None
    return MetaBatchResult(loss.detach(), logits.detach(), grads)


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


# ---------------------------------------------------------------------------- threads
_POOL_LOCK = threading.Lock()
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_WORKER_PREFIX = "maml-task"


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool per size (threads are reused across meta-steps); keyed by
    process id too, because a forked child inherits the pool but not its threads."""
    key = (os.getpid(), workers)
    with _POOL_LOCK:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix=_WORKER_PREFIX)
        return _POOLS[key]


def default_workers() -> int:
    """One worker per core the process may use (intra-op threads are set to 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, torch.get_num_threads()))


TASKS_PER_GROUP = 4
"""Tasks run side by side in one grouped network by the threads backend (measured with
bench/meta_step.py; a fixed number, so the chunks, and so the floating-point result,
do not depend on how many cores run them)."""


def task_chunks(tasks: int, group_size: int) -> list[range]:
    """Consecutive runs of at most ``group_size`` tasks, one per work item."""
    return [range(a, min(a + group_size, tasks)) for a in range(0, tasks, group_size)]


def threads_backend(
    net: Backbone,
    params: Params,
    rates: Params,
    inner_names: Sequence[str],
    batch: TaskBatch,
    plan: StepPlan,
    records: list[StatsRecord] | None = None,
    wrt: Sequence[torch.Tensor] | None = None,
    *,
    workers: int | None = None,
    group_size: int | None = None,
) -> MetaBatchResult:
    """Chunks of tasks in parallel threads; per-chunk gradients summed in task order.

    A chunk is ``group_size`` consecutive tasks (default :data:`TASKS_PER_GROUP` where
    the network allows, else 1) run as one grouped network
    (:mod:`metasuite.learner.fast.task_groups`). Summing per-chunk gradients in a fixed order keeps
    the result independent of thread scheduling and of the number of workers, so a
    step is deterministic. Autocast is thread-local, so the caller's autocast state is
    re-entered in each worker.
    """
    workers = workers or default_workers()
    if batch.support_x.device.type == "cpu":
        net = dataclasses.replace(net, fused_blocks=True)
    if group_size is None:
        group_size = TASKS_PER_GROUP if net.supports_task_groups else 1
    group = group_size > 1
    device_type = batch.support_x.device.type
    autocast = torch.is_autocast_enabled(device_type)
    autocast_dtype = torch.get_autocast_dtype(device_type)
    want_stats = records is not None

    def run(
        chunk: range,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None, list[StatsRecord]]:
        if threading.current_thread().name.startswith(_WORKER_PREFIX):
            torch.set_num_threads(1)  # a per-thread setting: the caller keeps its own
        stats: list[StatsRecord] = []
        part = slice(chunk.start, chunk.stop)
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast):
            if group:
                loss, logits = task_group_loss(
                    net,
                    params,
                    rates,
                    inner_names,
                    batch.support_x[part],
                    batch.support_y[part],
                    batch.query_x[part],
                    batch.query_y[part],
                    plan,
                    stats if want_stats else None,
                )
            else:
                record: StatsRecord = []
                loss, logits = task_loss(
                    net,
                    params,
                    rates,
                    inner_names,
                    batch.support_x[chunk.start],
                    batch.support_y[chunk.start],
                    batch.query_x[chunk.start],
                    batch.query_y[chunk.start],
                    plan,
                    record if want_stats else None,
                )
                logits = logits.unsqueeze(0)
                stats.append(record)
        grads = _gradients(loss, wrt) if wrt is not None else None
        return loss.detach(), logits.detach(), grads, stats

    chunks = task_chunks(len(batch), group_size)
    if workers == 1:  # in the calling thread, also with one intra-op thread: same numbers
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            outs = [run(chunk) for chunk in chunks]
        finally:
            torch.set_num_threads(before)
    else:
        outs = list(_pool(workers).map(run, chunks))
    loss_sum = torch.stack([o[0] for o in outs]).sum()
    logits = torch.cat([o[1] for o in outs])
    grads = None
    if wrt is not None:
        grads = [torch.stack([o[2][i] for o in outs]).sum(0) for i in range(len(wrt))]  # type: ignore[index]
    if records is not None:
        for o in outs:
            records.extend(o[3])
    return MetaBatchResult(loss_sum, logits, grads)


# ---------------------------------------------------------------------------- choice
BACKENDS: dict[str, Backend] = {
    "loop": loop_backend,
    "vmap": vmap_backend,
    "threads": threads_backend,
}

# The fastest measured per device type (bench/meta_step.py, results in bench/results/).
AUTO_BACKEND: dict[str, str] = {"cpu": "threads", "cuda": "vmap"}


def resolve_backend(name: str, device: torch.device) -> str:
    """The backend to run: ``auto`` means the fastest measured for the device type."""
    if name == "auto":
        return AUTO_BACKEND.get(device.type, "loop")
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of auto, {', '.join(BACKENDS)}; got {name!r}")
    if name == "threads" and device.type != "cpu":
        raise ConfigError(f"backend 'threads' runs on the CPU only; the device is {device}")
    return name


__all__ = [
    "AUTO_BACKEND",
    "BACKENDS",
    "TASKS_PER_GROUP",
    "Backend",
    "MetaBatchResult",
    "default_workers",
    "loop_backend",
    "resolve_backend",
    "task_chunks",
    "threads_backend",
    "vmap_backend",
]
