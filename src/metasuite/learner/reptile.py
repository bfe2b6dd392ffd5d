"""Reptile (Nichol, Achiam, Schulman 2018): move the meta-parameters toward the weights
each task's inner loop ends at.

The kernel, :func:`reptile_deltas`, runs the shared inner loop
(:func:`metasuite.learner.reference.adapt`, not differentiable: Reptile needs no graph
back to theta) on each task's support set and sums ``theta - theta_tilde`` over tasks.
:class:`ReptileSystem` divides that by the meta-batch's task count (so data-parallel
ranks all-reduce it like a gradient) and steps ``theta <- theta - eps * delta``, i.e.
``theta + eps * mean(theta_tilde - theta)``, with ``eps`` the outer learning-rate
schedule (cosine from ``meta_learning_rate`` to ``min_learning_rate``).

Inner optimiser (``inner_optimizer``): by default plain SGD at
``init_inner_loop_learning_rate`` for ``number_of_training_steps_per_iter`` full-batch
steps on the support set, the same inner update as MAML, so a method comparison changes
one thing (the outer rule). ``"adam"`` is the paper's (and the review-domain system's)
Adam with beta1 = 0: :class:`AdamDirection` plugs into the shared inner loop's gradient
hook and returns Adam's step direction, so ``theta - lr * direction`` is Adam's update;
its state is fresh for every task (a step stays a function of (theta, task)), and
evaluation adapts the same way. Tensors the inner loop does not adapt (batch-norm gamma and
beta unless ``enable_inner_loop_optimizable_bn_params``) get no update: their
``theta_tilde`` equals ``theta``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from metasuite.data.batch import TaskBatch
from metasuite.learner.backbones import MetaBackbone
from metasuite.learner.backends import WORKER_PREFIX, default_workers, map_in_task_threads
from metasuite.learner.base import eval_result
from metasuite.learner.models import Params, StatsRecord
from metasuite.learner.reference import (
    InnerGradient,
    StepPlan,
    SupportLoss,
    adapt,
    autograd_gradient,
    eval_plan,
)
from metasuite.learner.system import (
    EvalResult,
    MamlSystem,
    SyncGradients,
    SyncStats,
    cosine_learning_rate,
    task_accuracy,
)


class AdamDirection:
    """An :data:`InnerGradient` returning Adam's step direction ``m_hat / (sqrt(v_hat) +
    eps)`` instead of the gradient: with the inner loop's ``theta - lr * direction`` that
    is one Adam step. One instance per task (it holds that task's moments)."""

    def __init__(self, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8) -> None:
        self.betas, self.eps = betas, eps
        self.moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.steps = 0

    def __call__(
        self, support_loss: SupportLoss, inner: Params, create_graph: bool
    ) -> tuple[Params, StatsRecord | None]:
        grads, record = autograd_gradient(support_loss, inner, False)
        self.steps += 1
        b1, b2 = self.betas
        out: Params = {}
        for name, g in grads.items():
            m, v = self.moments.get(name, (torch.zeros_like(g), torch.zeros_like(g)))
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            self.moments[name] = (m, v)
            m_hat = m / (1 - b1**self.steps)
            v_hat = v / (1 - b2**self.steps)
            out[name] = m_hat / (v_hat.sqrt() + self.eps)
        return out, record


def inner_gradient(optimizer: str) -> InnerGradient:
    """A fresh inner-step rule for one task: the gradient (SGD) or Adam's direction."""
    return AdamDirection() if optimizer == "adam" else autograd_gradient


def reptile_plan(steps: int) -> StepPlan:
    """``steps`` inner SGD steps, the final query loss scored (for the metrics only)."""
    return StepPlan(steps, False, (0.0,) * (steps - 1) + (1.0,), differentiable=False)


def reptile_deltas(
    net: MetaBackbone,
    params: Params,
    rates: Params,
    inner_names: Sequence[str],
    batch: TaskBatch,
    plan: StepPlan,
    records: list[StatsRecord] | None = None,
    *,
    workers: int | None = None,
    optimizer: str = "sgd",
) -> tuple[Params, torch.Tensor, torch.Tensor]:
    """Adapt to each task; return (sum over tasks of ``theta - theta_tilde`` per adapted
    name, the sum of the final query losses, the final query logits ``[T, NQ, N]``).

    The tasks are independent (no graph is kept), so they run in the grouped backend's
    CPU thread pool, one task per work item with one intra-op thread each, and are
    summed in task order: the result does not depend on the number of workers. (In
    the calling thread with its intra-op threads, a task's many tiny ops spend most
    of their time in thread barriers: measured ~10x slower on a loaded 2-core CPU.)
    """
    theta = {k: v.detach() for k, v in params.items()}
    device_type = batch.support_x.device.type
    autocast = torch.is_autocast_enabled(device_type)
    autocast_dtype = torch.get_autocast_dtype(device_type)

    def one(t: int) -> tuple[Params, torch.Tensor, torch.Tensor, StatsRecord | None]:
        if threading.current_thread().name.startswith(WORKER_PREFIX):
            torch.set_num_threads(1)  # a per-thread setting: the caller keeps its own
        stats: StatsRecord | None = [] if records is not None else None
        adapted: Params = {}
        with (
            torch.enable_grad(),
            torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast),
            net.task_randomness(batch.task_ids[t]),
        ):
            loss, out = adapt(
                net,
                theta,
                rates,
                inner_names,
                batch.support_x[t],
                batch.support_y[t],
                batch.query_x[t],
                batch.query_y[t],
                plan,
                stats,
                gradient=inner_gradient(optimizer),
                adapted=adapted,
            )
        delta = {n: theta[n] - adapted[n].detach() for n in inner_names}
        return delta, loss.detach(), out.detach(), stats

    tasks = range(len(batch))
    workers = workers or default_workers()
    if device_type != "cpu" or not net.thread_safe:
        outs = [one(t) for t in tasks]
    else:
        outs = map_in_task_threads(one, tasks, workers)
    deltas = {n: torch.zeros_like(theta[n]) for n in inner_names}
    for delta, *_ in outs:  # task order
        for n in inner_names:
            deltas[n] += delta[n]
    if records is not None:
        records.extend(o[3] or [] for o in outs)
    losses = torch.stack([o[1] for o in outs]).sum()
    return deltas, losses, torch.stack([o[2] for o in outs])


class ReptileSystem(MamlSystem):
    """Reptile: fixed inner rates, no outer optimizer state, the update above.

    Evaluation is MAML's (adapt on the support set with the evaluation step count,
    score the query set), run by the configured backend.
    """

    META_LEARNER = "reptile"

    def rates_are_learned(self) -> bool:
        return False

    def make_optimizer(self) -> torch.optim.Optimizer | None:
        return None

    def train_step(
        self,
        batch: TaskBatch,
        epoch: int,
        *,
        total_tasks: int | None = None,
        sync_gradients: SyncGradients | None = None,
        sync_stats: SyncStats | None = None,
    ) -> dict[str, float]:
        """One Reptile meta-iteration; arguments as :meth:`MamlSystem.train_step` (the
        all-reduced "gradient" is the mean of ``theta - theta_tilde``)."""
        self.epoch = int(epoch)
        eps = cosine_learning_rate(self.cfg, epoch)
        plan = reptile_plan(self.cfg.number_of_training_steps_per_iter)
        batch = batch.to(self.device)
        records: list[StatsRecord] | None = [] if self.net.per_step_stats else None
        with self._autocast(), self.net.mode(training=True):
            deltas, loss_sum, logits = reptile_deltas(
                self.net,
                self.params,
                self.rates,
                self.inner_names,
                batch,
                plan,
                records,
                optimizer=self.cfg.inner_optimizer,
            )
        denominator = total_tasks if total_tasks is not None else len(batch)
        step = [deltas[n].to(self.params[n].dtype) / denominator for n in self.inner_names]
        if sync_gradients is not None:
            sync_gradients(step)
        with torch.no_grad():
            for n, d in zip(self.inner_names, step, strict=True):
                self.params[n].sub_(eps * d)
        if records is not None:
            if sync_stats is not None:
                records = sync_stats(records)
            self.net.update_running_stats(self.buffers, records)
        return {
            "loss": float(loss_sum) / len(batch),
            "accuracy": float(task_accuracy(logits, batch.query_y).mean()),
            "learning_rate": eps,
            "second_order": 0.0,
        }

    def evaluate(self, batch: TaskBatch) -> EvalResult:
        """MAML's evaluation; with Adam inner steps, each task adapted by Adam (fresh
        state) over the evaluation steps, then scored on its query set."""
        if self.cfg.inner_optimizer == "sgd":
            return super().evaluate(batch)
        plan = eval_plan(self.cfg)
        batch = batch.to(self.device)
        tensors = (
            self.params | self.buffers if self.net.normalises_with_running_stats else self.params
        )
        logits = []
        with torch.enable_grad(), self._autocast(), self.net.mode(training=False):
            for t in range(len(batch)):
                with self.net.task_randomness(batch.task_ids[t]):
                    _, out = adapt(
                        self.net,
                        tensors,
                        self.rates,
                        self.inner_names,
                        batch.support_x[t],
                        batch.support_y[t],
                        batch.query_x[t],
                        batch.query_y[t],
                        plan,
                        gradient=AdamDirection(),
                    )
                logits.append(out.detach())
        return eval_result(torch.stack(logits), batch.query_y)


__all__ = ["AdamDirection", "ReptileSystem", "inner_gradient", "reptile_deltas", "reptile_plan"]
