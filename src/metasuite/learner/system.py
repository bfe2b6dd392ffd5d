"""The MAML++ system: the thin stateful shell around the reference math.

It holds what is learned (meta-parameters, LSLR rates, per-step running statistics),
Adam, and the cosine learning rate as a closed-form function of the epoch, so a resumed
run needs no scheduler state. The inner loop itself is computed by a backend
(:mod:`metasuite.learner.backends`); all backends compute the reference function.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from metasuite.config import ExperimentConfig
from metasuite.data.batch import TaskBatch
from metasuite.learner import backends
from metasuite.learner.base import (
    EvalResult,
    LearnerBase,
    SyncGradients,
    SyncStats,
    cosine_learning_rate,
    eval_result,
    task_accuracy,
)
from metasuite.learner.models import Params, StatsRecord
from metasuite.learner.reference import eval_plan, init_rates, inner_parameter_names, train_plan


class MamlSystem(LearnerBase):
    """MAML/MAML++ learner: meta-parameters, LSLR rates, running stats, Adam and the
    schedule (the shared parts in :class:`~metasuite.learner.base.LearnerBase`).

    ``train_step`` runs one meta-iteration on a :class:`TaskBatch`; ``evaluate``
    adapts to each task and reports the query predictions. The inner loop is computed
    by the backend chosen with ``cfg.backend`` (see ``metasuite.learner.backends``); all
    backends compute the same function.
    """

    META_LEARNER = "maml"
    STATE_GROUPS: ClassVar[tuple[str, ...]] = ("params", "rates", "buffers")
    OPTIMIZER_HINT: ClassVar[str] = (
        "was it trained with another learnable_per_layer_per_step_inner_loop_learning_rate?"
    )

    def __init__(
        self,
        cfg: ExperimentConfig,
        device: torch.device | str = "cpu",
        backend: str | None = None,
    ) -> None:
        self._backend_choice = backend
        super().__init__(cfg, device)

    def init_extra_state(self) -> None:
        """The adapted names, the inner rates (learned or not) and the backend."""
        self.inner_names = self.adapted_parameter_names()
        self.learnable_rates = self.rates_are_learned()
        self.rates: Params = {
            k: v.to(self.device).requires_grad_(self.learnable_rates)
            for k, v in self.initial_rates().items()
        }
        self.backend = backends.resolve_backend(
            self._backend_choice or self.cfg.backend,
            self.device,
            fast=self.net.supports_fast_backends,
        )
        self._backend = backends.BACKENDS[self.backend]

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

    # ------------------------------------------------------------------ state
    def meta_parameters(self) -> list[torch.Tensor]:
        """Everything the outer loop learns, in a fixed order."""
        out = list(self.params.values())
        if self.learnable_rates:
            out += list(self.rates.values())
        return out

    # ------------------------------------------------------------------ steps
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
        lr = self.start_step(epoch)
        plan = train_plan(self.cfg, epoch)
        batch = batch.to(self.device)
        records: list[StatsRecord] | None = [] if self.net.per_step_stats else None
        meta = self.meta_parameters()
        with self._autocast(), self.net.mode(training=True):
            result = self._backend(
                self.net, self.params, self.rates, self.inner_names, batch, plan, records, meta
            )
        assert result.grads is not None
        denominator = total_tasks if total_tasks is not None else len(batch)
        self.apply_gradients(list(result.grads), denominator, sync_gradients)
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
        return eval_result(result.logits, batch.query_y)


__all__ = [
    "EvalResult",
    "MamlSystem",
    "SyncGradients",
    "SyncStats",
    "cosine_learning_rate",
    "task_accuracy",
]
