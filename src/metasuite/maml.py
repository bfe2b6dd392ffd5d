"""MAML / MAML++ as pure functions over parameter dicts, plus the per-task reference loop.

Everything here is a function of its arguments: the meta-parameters (``params``), the
per-step inner learning rates (``rates``, LSLR) and a :class:`StepPlan` saying how many
inner steps to take, whether to keep the second-order graph and how to weight each
step's query loss (MSL). :func:`task_loss` is the ground truth that every faster
backend (``maml_backends``) is tested against. :class:`MamlSystem` at the end is the
thin stateful shell around them: meta-parameters, buffers, Adam and the cosine
learning-rate schedule.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from metasuite.config import ExperimentConfig
from metasuite.data.batch import TaskBatch
from metasuite.errors import ConfigError, UserError
from metasuite.models import Backbone, Params, StatsRecord
from metasuite.stem import StemInput

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


def inner_parameter_names(net: Backbone, cfg: ExperimentConfig) -> tuple[str, ...]:
    """What the inner loop adapts: conv/linear weights and biases, and the norm
    affine parameters only with enable_inner_loop_optimizable_bn_params."""
    names = [f"conv{i}.{k}" for i in range(net.num_layers) for k in ("weight", "bias")]
    if cfg.enable_inner_loop_optimizable_bn_params:
        for i in range(net.num_layers):
            if net.learn_gamma:
                names.append(f"norm{i}.weight")
            if net.learn_beta:
                names.append(f"norm{i}.bias")
    names += ["linear.weight", "linear.bias"]
    return tuple(names)


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
    support, query = net.prepare(support_x), net.prepare(query_x)
    return adapt(net, params, rates, inner_names, support, support_y, query, query_y, plan, stats)


def adapt(
    net: Backbone,
    params: Params,
    rates: Params,
    inner_names: Sequence[str],
    support: torch.Tensor | StemInput,
    support_y: torch.Tensor,
    query: torch.Tensor | StemInput,
    query_y: torch.Tensor,
    plan: StepPlan,
    stats: StatsRecord | None = None,
    tasks: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference inner loop, on images as :meth:`Backbone.prepare` returns them.

    At step ``s`` the support loss under step-``s`` parameters gives the gradient
    (kept differentiable for second order), the update uses ``lr[name][s]``, and the
    query loss of the updated parameters (norm row ``s``) enters the task loss with
    weight ``plan.loss_weights[s]``. With ``tasks`` = T, ``params`` are
    :meth:`Backbone.widen`'s T copies, labels are ``[T, n]``, and the loss is the sum
    of the T task losses (:mod:`metasuite.task_groups`).
    """
    if not plan.differentiable:
        params = {k: v.detach().requires_grad_(k in inner_names) for k, v in params.items()}
        rates = {k: v.detach() for k, v in rates.items()}
    query_steps = set(plan.query_steps)
    total = next(iter(params.values())).new_zeros(())
    logits = total
    for step in range(plan.num_steps):
        support_logits = net.forward(params, support, step, stats, tasks)
        support_loss = summed_cross_entropy(support_logits, support_y)
        inner = [params[n] for n in inner_names]
        grads = torch.autograd.grad(
            support_loss, inner, create_graph=plan.second_order and plan.differentiable
        )
        params = inner_update(params, grads, rates, inner_names, step)
        if not plan.differentiable:
            params = {
                k: (v.detach().requires_grad_() if k in inner_names else v)
                for k, v in params.items()
            }
        if step in query_steps:
            logits = net.forward(params, query, step, stats, tasks)
            weight = plan.loss_weights[step]
            if weight != 0.0:
                total = total + weight * summed_cross_entropy(logits, query_y)
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


# ====================================================================== the system


def cosine_learning_rate(cfg: ExperimentConfig, epoch: int) -> float:
    """CA: the meta learning rate at ``epoch``, cosine from meta_learning_rate down to
    min_learning_rate over total_epochs (CosineAnnealingLR's closed form).

    A function of the epoch alone, so a resumed run needs no scheduler state.
    """
    e = min(max(epoch, 0), cfg.total_epochs)
    lo, hi = cfg.min_learning_rate, cfg.meta_learning_rate
    return lo + (hi - lo) * (1 + math.cos(math.pi * e / cfg.total_epochs)) / 2


@dataclass(frozen=True)
class EvalResult:
    """Evaluation of a batch of tasks after adaptation (final inner step)."""

    loss: float
    """Mean over tasks of the final-step query cross-entropy."""
    accuracy: float
    """Mean over tasks of the query accuracy."""
    task_accuracy: torch.Tensor
    """float32 ``[T]`` on the CPU."""
    probabilities: torch.Tensor
    """Query softmax probabilities, float32 ``[T, NQ, N]`` on the CPU (for ensembles)."""


SyncGradients = Callable[[list[torch.Tensor]], None]
SyncStats = Callable[[list[StatsRecord]], list[StatsRecord]]


def _check_supported(cfg: ExperimentConfig) -> None:
    """Reference switches this learner does not implement: refuse rather than ignore."""
    if cfg.dropout_rate_value != 0:
        raise ConfigError(
            f"dropout_rate_value must be 0, got {cfg.dropout_rate_value}: the backbone has "
            "no dropout (neither has the reference network, which ignores this key)"
        )
    if cfg.learnable_batch_norm_momentum:
        raise ConfigError(
            "learnable_batch_norm_momentum must be false: batch-norm momentum is fixed at "
            "0.1 (the reference code ignores this key too)"
        )


class MamlSystem:
    """MAML/MAML++ learner: meta-parameters, running stats, Adam and the schedule.

    ``train_step`` runs one meta-iteration on a :class:`TaskBatch`; ``evaluate``
    adapts to each task and reports the query predictions. The inner loop is computed
    by the backend chosen with ``cfg.backend`` (see ``metasuite.maml_backends``); all
    backends compute the same function.
    """

    STATE_FORMAT = 1

    def __init__(
        self,
        cfg: ExperimentConfig,
        device: torch.device | str = "cpu",
        backend: str | None = None,
    ) -> None:
        from metasuite import maml_backends

        _check_supported(cfg)
        self.cfg = cfg
        self.device = torch.device(device)
        self.net = Backbone.from_config(cfg)
        self.inner_names = inner_parameter_names(self.net, cfg)
        generator = torch.Generator().manual_seed(cfg.train_seed)
        self.params: Params = {
            k: v.to(self.device).requires_grad_()
            for k, v in self.net.init_params(generator).items()
        }
        self.learnable_rates = cfg.learnable_per_layer_per_step_inner_loop_learning_rate
        self.rates: Params = {
            k: v.to(self.device).requires_grad_(self.learnable_rates)
            for k, v in init_rates(
                self.inner_names,
                cfg.number_of_training_steps_per_iter,
                cfg.init_inner_loop_learning_rate,
            ).items()
        }
        self.buffers: Params = {k: v.to(self.device) for k, v in self.net.init_buffers().items()}
        self.backend = maml_backends.resolve_backend(backend or cfg.backend, self.device)
        self._backend = maml_backends.BACKENDS[self.backend]
        self.optimizer = torch.optim.Adam(
            self.meta_parameters(), lr=cfg.meta_learning_rate, weight_decay=cfg.weight_decay
        )
        self.epoch = 0
        self.clamp_gradients = "imagenet" in cfg.dataset_name.lower()

    # ------------------------------------------------------------------ state
    def meta_parameters(self) -> list[torch.Tensor]:
        """Everything the outer loop learns, in a fixed order."""
        out = list(self.params.values())
        if self.learnable_rates:
            out += list(self.rates.values())
        return out

    def state_dict(self) -> dict[str, Any]:
        """Parameters, rates, running stats, optimizer state and the epoch."""
        return {
            "format": self.STATE_FORMAT,
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "rates": {k: v.detach().clone() for k, v in self.rates.items()},
            "buffers": {k: v.clone() for k, v in self.buffers.items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a checkpoint of another architecture is refused.

        Everything is checked before anything is copied, so a refused checkpoint leaves
        the learner as it was.
        """
        if not isinstance(state, dict) or state.get("format") != self.STATE_FORMAT:
            raise UserError(
                f"learner state: expected format {self.STATE_FORMAT}, "
                f"got {state.get('format') if isinstance(state, dict) else type(state)}"
            )
        for group in ("params", "rates", "buffers"):
            mine: Params = getattr(self, group)
            theirs = state[group]
            if set(theirs) != set(mine) or any(
                tuple(theirs[k].shape) != tuple(v.shape) for k, v in mine.items()
            ):
                raise UserError(
                    f"learner state: the checkpoint's {group} do not match this config's "
                    f"network ({sorted(theirs)} vs {sorted(mine)}); was it trained with "
                    "another config?"
                )
        # The rates have the same shapes whether they are learned or not, but only
        # learned ones are in the optimizer: compare its parameter count too (else
        # torch raises a bare ValueError after half the state has been copied).
        saved = sum(len(g["params"]) for g in state["optimizer"]["param_groups"])
        if saved != len(self.meta_parameters()):
            raise UserError(
                f"learner state: the checkpoint's optimizer holds {saved} tensors, this "
                f"config's {len(self.meta_parameters())}; was it trained with another "
                "learnable_per_layer_per_step_inner_loop_learning_rate?"
            )
        with torch.no_grad():
            for group in ("params", "rates", "buffers"):
                for k, v in getattr(self, group).items():
                    v.copy_(state[group][k])
        self.optimizer.load_state_dict(state["optimizer"])
        # torch restores the saved hyperparameters too; the config decides them (the
        # learning rate is set from the epoch at every step, weight decay only here).
        for group in self.optimizer.param_groups:
            group["weight_decay"] = self.cfg.weight_decay
        self.epoch = int(state["epoch"])

    # ------------------------------------------------------------------ steps
    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"
        )

    def train_step(
        self,
        batch: TaskBatch,
        epoch: int,
        *,
        total_tasks: int | None = None,
        sync_gradients: SyncGradients | None = None,
        sync_stats: SyncStats | None = None,
    ) -> dict[str, float]:
        """One meta-iteration: adapt to every task, then one Adam step on the meta-loss.

        The meta-loss is the sum of this batch's task losses divided by
        ``total_tasks`` (default: the tasks in this batch), so ranks holding parts of a
        meta-batch produce gradients that ``sync_gradients`` (an all-reduce SUM over
        the gradient list, called before the optimizer step) turns into the full
        batch's mean. ``sync_stats`` maps this rank's per-task batch-norm records to
        those of the whole meta-batch in task order (an all-gather), so every rank folds
        the same statistics into its running stats as a single process would.
        """
        self.epoch = int(epoch)
        plan = train_plan(self.cfg, epoch)
        lr = cosine_learning_rate(self.cfg, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(self.device)
        records: list[StatsRecord] | None = [] if self.net.per_step_stats else None
        meta = self.meta_parameters()
        with self._autocast():
            result = self._backend(
                self.net, self.params, self.rates, self.inner_names, batch, plan, records, meta
            )
        assert result.grads is not None
        denominator = total_tasks if total_tasks is not None else len(batch)
        grads = [g / denominator for g in result.grads]
        if sync_gradients is not None:
            sync_gradients(grads)
        if self.clamp_gradients:
            # The reference clamps the network's meta-gradients for ImageNet-like data.
            for g in grads[: len(self.params)]:
                g.clamp_(-10, 10)
        for p, g in zip(meta, grads, strict=True):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if records is not None:
            if sync_stats is not None:
                records = sync_stats(records)
            self.net.update_running_stats(self.buffers, records)
        accuracy = _task_accuracy(result.logits, batch.query_y).mean()
        return {
            "loss": float(result.loss_sum) / len(batch),
            "accuracy": float(accuracy),
            "learning_rate": lr,
            "second_order": float(plan.second_order),
        }

    def evaluate(self, batch: TaskBatch) -> EvalResult:
        """Adapt to each task's support set (evaluation steps, first order) and score
        the query set; the meta-parameters and running stats are left untouched."""
        plan = eval_plan(self.cfg)
        batch = batch.to(self.device)
        with torch.enable_grad(), self._autocast():
            result = self._backend(
                self.net, self.params, self.rates, self.inner_names, batch, plan, None, None
            )
        logits = result.logits.float()
        n = logits.shape[-1]
        losses = F.cross_entropy(
            logits.reshape(-1, n), batch.query_y.reshape(-1), reduction="none"
        ).view(len(batch), -1)
        task_acc = _task_accuracy(logits, batch.query_y)
        return EvalResult(
            loss=float(losses.mean()),
            accuracy=float(task_acc.mean()),
            task_accuracy=task_acc.cpu(),
            probabilities=logits.softmax(-1).cpu(),
        )


def _task_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-task query accuracy ``[T]`` from logits ``[T, NQ, N]``."""
    return (logits.argmax(-1) == labels).float().mean(-1)


__all__ = [
    "MSL_FLOOR",
    "EvalResult",
    "MamlSystem",
    "StepPlan",
    "adapt",
    "cosine_learning_rate",
    "eval_plan",
    "init_rates",
    "inner_parameter_names",
    "inner_update",
    "meta_loss_loop",
    "msl_weights",
    "rate_at",
    "summed_cross_entropy",
    "task_loss",
    "train_plan",
]
