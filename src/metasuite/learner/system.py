"""The MAML++ system: the thin stateful shell around the reference math.

It holds what is learned (meta-parameters, LSLR rates, per-step running statistics),
Adam, and the cosine learning rate as a closed-form function of the epoch, so a resumed
run needs no scheduler state. The inner loop itself is computed by a backend
(:mod:`metasuite.learner.backends`); all backends compute the reference function.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from metasuite.config import ExperimentConfig
from metasuite.data.batch import TaskBatch
from metasuite.errors import ConfigError, UserError
from metasuite.learner import backends
from metasuite.learner.backbones import build_backbone
from metasuite.learner.models import Params, StatsRecord
from metasuite.learner.reference import eval_plan, init_rates, inner_parameter_names, train_plan


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
    by the backend chosen with ``cfg.backend`` (see ``metasuite.learner.backends``); all
    backends compute the same function.
    """

    STATE_FORMAT = 1
    META_LEARNER = "maml"
    """The ``meta_learner`` value this class learns (checkpoints record it)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        device: torch.device | str = "cpu",
        backend: str | None = None,
    ) -> None:
        _check_supported(cfg)
        if cfg.meta_learner != self.META_LEARNER:
            raise ConfigError(
                f"meta_learner is {cfg.meta_learner!r} but {type(self).__name__} learns "
                f"{self.META_LEARNER!r}; build learners with "
                "metasuite.learner.learners.build_learner"
            )
        self.cfg = cfg
        self.device = torch.device(device)
        self.net = build_backbone(cfg).to(self.device)
        self.inner_names = self.adapted_parameter_names()
        generator = torch.Generator().manual_seed(cfg.train_seed)
        self.params: Params = {
            k: v.to(self.device).requires_grad_()
            for k, v in self.net.init_params(generator).items()
        }
        self.learnable_rates = self.rates_are_learned()
        self.rates: Params = {
            k: v.to(self.device).requires_grad_(self.learnable_rates)
            for k, v in self.initial_rates().items()
        }
        self.buffers: Params = {k: v.to(self.device) for k, v in self.net.init_buffers().items()}
        self.backend = backends.resolve_backend(
            backend or cfg.backend, self.device, fast=self.net.supports_fast_backends
        )
        self._backend = backends.BACKENDS[self.backend]
        self.optimizer: torch.optim.Optimizer | None = self.make_optimizer()
        self.epoch = 0
        self.clamp_gradients = "imagenet" in cfg.dataset_name.lower()

    # ------------------------------------------------------------------ what differs
    # The hooks by which the other meta-learners (metasuite.learner.meta_sgd, .anil,
    # .reptile) differ from MAML; everything else is shared.
    def adapted_parameter_names(self) -> tuple[str, ...]:
        """The tensors the inner loop adapts."""
        return inner_parameter_names(self.net, self.cfg)

    def rates_are_learned(self) -> bool:
        """Whether the outer loop learns the inner rates (LSLR)."""
        return self.cfg.learnable_per_layer_per_step_inner_loop_learning_rate

    def initial_rates(self) -> Params:
        """The inner rates before meta-training: one per adapted tensor per step."""
        return init_rates(
            self.inner_names,
            self.cfg.number_of_training_steps_per_iter,
            self.cfg.init_inner_loop_learning_rate,
        )

    def make_optimizer(self) -> torch.optim.Optimizer | None:
        """The outer optimizer: Adam over :meth:`meta_parameters`."""
        return torch.optim.Adam(
            self.meta_parameters(),
            lr=self.cfg.meta_learning_rate,
            weight_decay=self.cfg.weight_decay,
        )

    # ------------------------------------------------------------------ state
    def meta_parameters(self) -> list[torch.Tensor]:
        """Everything the outer loop learns, in a fixed order."""
        out = list(self.params.values())
        if self.learnable_rates:
            out += list(self.rates.values())
        return out

    def state_dict(self) -> dict[str, Any]:
        """Parameters, rates, running stats, optimizer state and the epoch (and, for a
        backbone other than the reference network, what it is)."""
        backbone = {} if self.cfg.backbone == "conv" else {"backbone": self.net.describe()}
        return {
            "format": self.STATE_FORMAT,
            "meta_learner": self.META_LEARNER,
            **backbone,
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "rates": {k: v.detach().clone() for k, v in self.rates.items()},
            "buffers": {k: v.clone() for k, v in self.buffers.items()},
            "optimizer": (
                None if self.optimizer is None else copy.deepcopy(self.optimizer.state_dict())
            ),
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
        # Checkpoints written before meta_learner existed are MAML's.
        theirs_learner = state.get("meta_learner", "maml")
        if theirs_learner != self.META_LEARNER:
            raise ConfigError(
                f"learner state: the checkpoint was trained with meta_learner "
                f"{theirs_learner!r}, this config says {self.META_LEARNER!r}; start a new "
                "experiment (another experiment_name) or set meta_learner back"
            )
        # Checkpoints written before backbones existed are the reference network's.
        theirs_backbone = state.get("backbone", {"name": "conv"})
        mine_backbone = self.net.describe()
        if theirs_backbone != mine_backbone:
            raise ConfigError(
                "learner state: the checkpoint was trained with backbone "
                f"{_backbone_summary(theirs_backbone)}, this config builds "
                f"{_backbone_summary(mine_backbone)}; start a new experiment (another "
                "experiment_name) or set the backbone back"
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
        optimizer = state["optimizer"]
        saved = (
            len(self.meta_parameters())
            if optimizer is None and self.optimizer is None
            else sum(len(g["params"]) for g in (optimizer or {"param_groups": []})["param_groups"])
        )
        if saved != len(self.meta_parameters()) or (optimizer is None) != (self.optimizer is None):
            raise UserError(
                f"learner state: the checkpoint's optimizer holds {saved} tensors, this "
                f"config's {len(self.meta_parameters())}; was it trained with another "
                "learnable_per_layer_per_step_inner_loop_learning_rate?"
            )
        with torch.no_grad():
            for group in ("params", "rates", "buffers"):
                for k, v in getattr(self, group).items():
                    v.copy_(state[group][k])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(optimizer)
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
        assert self.optimizer is not None
        self.epoch = int(epoch)
        plan = train_plan(self.cfg, epoch)
        lr = cosine_learning_rate(self.cfg, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(self.device)
        records: list[StatsRecord] | None = [] if self.net.per_step_stats else None
        meta = self.meta_parameters()
        with self._autocast(), self.net.mode(training=True):
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
        accuracy = task_accuracy(result.logits, batch.query_y).mean()
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
        # A network that normalises with running statistics in evaluation reads them
        # from the tensors it is given (the inner loop leaves them as they are).
        tensors = (
            self.params | self.buffers if self.net.normalises_with_running_stats else self.params
        )
        with torch.enable_grad(), self._autocast(), self.net.mode(training=False):
            result = self._backend(
                self.net, tensors, self.rates, self.inner_names, batch, plan, None, None
            )
        return self.scored(result.logits.float(), batch)

    @staticmethod
    def scored(logits: torch.Tensor, batch: TaskBatch) -> EvalResult:
        """Query loss, accuracy and probabilities of logits ``[T, NQ, N]``."""
        n = logits.shape[-1]
        losses = F.cross_entropy(
            logits.reshape(-1, n), batch.query_y.reshape(-1), reduction="none"
        ).view(len(batch), -1)
        task_acc = task_accuracy(logits, batch.query_y)
        return EvalResult(
            loss=float(losses.mean()),
            accuracy=float(task_acc.mean()),
            task_accuracy=task_acc.cpu(),
            probabilities=logits.softmax(-1).cpu(),
        )


def _backbone_summary(description: dict[str, Any]) -> str:
    """A backbone description in a line: its name and what differs from the name."""
    extra = {k: v for k, v in description.items() if k not in ("name", "parameters")}
    params = description.get("parameters")
    shapes = f", {len(params)} parameter tensors" if isinstance(params, dict) else ""
    return f"{description.get('name')!r}{f' {extra}' if extra else ''}{shapes}"


def task_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-task query accuracy ``[T]`` from logits ``[T, NQ, N]``."""
    return (logits.argmax(-1) == labels).float().mean(-1)


__all__ = [
    "EvalResult",
    "MamlSystem",
    "SyncGradients",
    "SyncStats",
    "cosine_learning_rate",
    "task_accuracy",
]
