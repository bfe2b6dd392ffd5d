"""Interchangeable implementations of the meta-batch loss and gradient, and the rule
choosing one.

Every backend is a function ``(net, params, rates, inner_names, batch, plan, records,
wrt) -> MetaBatchResult``: the sum over tasks of the task losses, the final query
logits and, when ``wrt`` is given, the gradient of that sum with respect to ``wrt``.
They compute exactly what the reference loop (:func:`metasuite.learner.reference.meta_loss_loop`)
computes and differ only in how the work is laid out for the hardware; a test holds
each to the loop to 1e-5.

- ``loop``: per-task Python loop with ``torch.autograd.grad`` (the reference).
- ``vmap``: ``torch.func.vmap`` over tasks of the same inner loop
  (:func:`metasuite.learner.reference.adapt`), differentiated with ``torch.func.grad``.
  It should turn batch_size x steps small launches into a few batched kernels on a GPU
  (not measured yet: no GPU benchmark has been run); on a CPU the per-task weights
  become grouped convolutions, which are slower than the loop.
- ``grouped``: task groups of :data:`TASKS_PER_GROUP` consecutive tasks, each run as one
  grouped network (:class:`metasuite.learner.fast.network.FastBackbone`), the groups
  run in a pool of CPU threads with one intra-op thread each and each group's outer
  backward in its own thread. The ops of one small task parallelise poorly inside an
  op; whole groups parallelise well. Each group's graph is freed after its backward,
  so it also needs less memory. Configs may still say ``threads``, its old name.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch

from metasuite.data.batch import TaskBatch
from metasuite.errors import ConfigError
from metasuite.learner.fast.network import FastBackbone
from metasuite.learner.fast.task_groups import task_group_loss
from metasuite.learner.models import Backbone, Params, StatsRecord
from metasuite.learner.reference import StepPlan, SupportLoss, adapt, meta_loss_loop


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
    """d(loss)/d(wrt), zeros for tensors the loss does not use (e.g. the rates of steps
    evaluation never takes)."""
    grads = torch.autograd.grad(loss, list(wrt), allow_unused=True, materialize_grads=True)
    return list(grads)


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
@dataclass(frozen=True)
class _ElementaryNormBackbone(Backbone):
    """The reference network with its norms written in elementary ops: the same
    function, for torch.func.vmap, whose batching rule for the fused norms' double
    backward is wrong when gamma/beta are batched (pytorch/functorch#534; still so in
    torch 2.13: second-order meta-gradients 0.24 off with inner-loop BN parameters)."""

    @classmethod
    def of(cls, net: Backbone) -> _ElementaryNormBackbone:
        return cls(**{f.name: getattr(net, f.name) for f in dataclasses.fields(net)})

    def normalise(
        self,
        x: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        record: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> torch.Tensor:
        """Batch norm (over dims 0, 2, 3, gamma/beta ``[C]``) or layer norm (over 1, 2,
        3, gamma/beta ``[C, H, W]``) from ``var_mean``."""
        dims = (1, 2, 3) if self.norm == "layer_norm" else (0, 2, 3)
        var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        shape = (1, *x.shape[1:]) if self.norm == "layer_norm" else (1, -1, 1, 1)
        if gamma is not None:
            out = out * gamma.reshape(shape)
        if beta is not None:
            out = out + beta.reshape(shape)
        if record is not None:
            n = x.numel() // x.shape[1]
            with torch.no_grad():
                unbiased = var.detach().flatten() * (n / max(n - 1, 1))
                record.append((mean.detach().flatten(), unbiased))
        return out


def func_gradient(
    support_loss: SupportLoss, inner: Params, create_graph: bool
) -> tuple[Params, StatsRecord | None]:
    """:data:`metasuite.learner.reference.InnerGradient` by ``torch.func.grad``, which
    works under ``torch.func.vmap`` (``torch.autograd.grad`` does not)."""
    rows: list[int] = []

    def tensors_only(p: Params) -> tuple[torch.Tensor, list[list[tuple[torch.Tensor, ...]]]]:
        # torch.func.grad's auxiliary output must hold tensors only: keep the rows aside.
        loss, record = support_loss(p)
        rows[:] = [row for row, _ in record or []]
        return loss, [list(layers) for _, layers in record or []]

    grads, layers = torch.func.grad(tensors_only, has_aux=True)(inner)
    if not create_graph:
        grads = {k: g.detach() for k, g in grads.items()}
    record: StatsRecord = [(row, list(pairs)) for row, pairs in zip(rows, layers, strict=True)]
    return grads, record


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
    """The loop's computation, :func:`adapt` vmapped over the tasks of the batch."""
    net = _ElementaryNormBackbone.of(net)
    want_stats = records is not None and net.per_step_stats
    rows: list[int] = []

    def one_task(
        sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stats: StatsRecord | None = [] if want_stats else None
        loss, logits = adapt(
            net, params, rates, inner_names, sx, sy, qx, qy, plan, stats, func_gradient
        )
        # vmap's outputs must be tensors: each pass's statistics as [L, 2, C], stacked.
        rows[:] = [row for row, _ in stats or []]
        passes = [torch.stack([torch.stack(pair) for pair in layers]) for _, layers in stats or []]
        return loss, logits, torch.stack(passes) if passes else sx.new_zeros((0,))

    losses, logits, stats = torch.func.vmap(one_task)(
        batch.support_x, batch.support_y, batch.query_x, batch.query_y
    )
    if want_stats and records is not None:
        for task in stats.detach():  # [passes, L, 2, C]
            records.append([(row, [(p[0], p[1]) for p in task[i]]) for i, row in enumerate(rows)])
    loss = losses.sum()
    grads = _gradients(loss, wrt) if wrt is not None else None
    return MetaBatchResult(loss.detach(), logits.detach(), grads)


# ---------------------------------------------------------------------------- grouped
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


Item = TypeVar("Item")
Out = TypeVar("Out")


def map_in_task_threads(
    work: Callable[[Item], Out], items: Sequence[Item], workers: int
) -> list[Out]:
    """``[work(i) for i in items]`` in order, on the process-wide pool of ``workers``
    threads (each worker sets one intra-op thread for itself); with one worker in the
    calling thread, also at one intra-op thread, so the numbers are the same."""
    if workers == 1:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [work(i) for i in items]
        finally:
            torch.set_num_threads(before)
    return list(_pool(workers).map(work, items))


def default_workers() -> int:
    """One worker per core the process may use (intra-op threads are set to 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, torch.get_num_threads()))


TASKS_PER_GROUP = 4
"""Tasks run side by side in one grouped network by the grouped backend (measured with
bench/meta_step.py; a fixed number, so the chunks, and so the floating-point result,
do not depend on how many cores run them)."""


def task_chunks(tasks: int, group_size: int) -> list[range]:
    """Consecutive runs of at most ``group_size`` tasks, one per work item."""
    return [range(a, min(a + group_size, tasks)) for a in range(0, tasks, group_size)]


def grouped_backend(
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
    """Task groups as grouped networks, the groups in parallel CPU threads; per-group
    gradients summed in task order.

    A group is ``group_size`` consecutive tasks (default :data:`TASKS_PER_GROUP` where
    the network allows, else 1) run as one :class:`FastBackbone`
    (:mod:`metasuite.learner.fast.task_groups`). Summing per-group gradients in a fixed
    order keeps the result independent of thread scheduling and of the number of
    workers, so a step is deterministic. Autocast is thread-local, so the caller's
    autocast state is re-entered in each worker.
    """
    workers = workers or default_workers()
    if group_size is None:
        group_size = TASKS_PER_GROUP if FastBackbone.supports_task_groups(net) else 1
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
        grads = _gradients(loss, wrt) if wrt is not None else None
        return loss.detach(), logits.detach(), grads, stats

    outs = map_in_task_threads(run, task_chunks(len(batch), group_size), workers)
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
    "grouped": grouped_backend,
}

# What ``auto`` runs per device type. CPU: the fastest measured (bench/meta_step.py,
# results in bench/results/). CUDA: vmap is NOT measured (no GPU benchmark has been
# run); it is the choice by design (few batched kernels instead of many small launches).
AUTO_BACKEND: dict[str, str] = {"cpu": "grouped", "cuda": "vmap"}


def resolve_backend(name: str, device: torch.device, *, fast: bool = True) -> str:
    """The backend to run: ``auto`` means the fastest measured for the device type.

    ``fast`` false: the network runs only through the per-task loop (a generic
    ``nn.Module`` backbone: ``functional_call`` swaps tensors into one module, and its
    batch norm updates scratch buffers in place, which vmap cannot batch)."""
    if name == "auto":
        return AUTO_BACKEND.get(device.type, "loop") if fast else "loop"
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of auto, {', '.join(BACKENDS)}; got {name!r}")
    if not fast and name != "loop":
        raise ConfigError(
            f'backend {name!r} runs the reference "conv" network only; use "loop" or "auto" '
            "for this backbone"
        )
    if name == "grouped" and device.type != "cpu":
        raise ConfigError(f"backend 'grouped' runs on the CPU only; the device is {device}")
    return name


__all__ = [
    "AUTO_BACKEND",
    "BACKENDS",
    "TASKS_PER_GROUP",
    "WORKER_PREFIX",
    "Backend",
    "MetaBatchResult",
    "default_workers",
    "func_gradient",
    "grouped_backend",
    "loop_backend",
    "map_in_task_threads",
    "resolve_backend",
    "task_chunks",
    "vmap_backend",
]

WORKER_PREFIX = _WORKER_PREFIX
"""Name prefix of the pool's threads (they set one intra-op thread each)."""
