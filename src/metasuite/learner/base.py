"""What every learner shares, with or without an inner loop.

The builder drives one interface (``train_step``, ``evaluate`` -> :class:`EvalResult`,
``state_dict``/``load_state_dict``). :class:`LearnerBase` holds the part of it that does
not depend on how a task is solved: the meta-parameters and buffers of the backbone,
Adam over them, the cosine learning rate as a closed-form function of the epoch (so a
resumed run needs no scheduler state) and the checkpoint state with its checks. The
MAML family (:class:`metasuite.learner.system.MamlSystem`) adds its inner-loop rates and
backends; ProtoNet and the fine-tuning baselines add a loss and an evaluation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from metasuite.config import ExperimentConfig
from metasuite.errors import ConfigError, UserError
from metasuite.learner.backbones import MetaBackbone, build_backbone
from metasuite.learner.models import Params, StatsRecord


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


def task_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-task query accuracy ``[T]`` from logits ``[T, NQ, N]``."""
    return (logits.argmax(-1) == labels).float().mean(-1)


def eval_result(logits: torch.Tensor, labels: torch.Tensor) -> EvalResult:
    """The :class:`EvalResult` of query logits ``[T, NQ, N]`` and labels ``[T, NQ]``."""
    logits = logits.float()
    n = logits.shape[-1]
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, n), labels.reshape(-1), reduction="none"
    ).view(labels.shape[0], -1)
    acc = task_accuracy(logits, labels)
    return EvalResult(
        loss=float(losses.mean()),
        accuracy=float(acc.mean()),
        task_accuracy=acc.cpu(),
        probabilities=logits.softmax(-1).cpu(),
    )


def _check_supported(cfg: ExperimentConfig) -> None:
    """Reference switches no learner implements: refuse rather than ignore."""
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


def _backbone_summary(description: dict[str, Any]) -> str:
    """A backbone description in a line: its name and what differs from the name."""
    extra = {k: v for k, v in description.items() if k not in ("name", "parameters")}
    params = description.get("parameters")
    shapes = f", {len(params)} parameter tensors" if isinstance(params, dict) else ""
    return f"{description.get('name')!r}{f' {extra}' if extra else ''}{shapes}"


NO_INNER_LOOP_BACKEND = "loop"
"""What the runner records as the backend of the learners without an inner loop: their
tasks run one after the other through the plain network, as the loop backend's do."""


def check_backend(cfg: ExperimentConfig, backend: str | None, learner: str) -> str:
    """The backend of a learner without an inner loop: ``auto`` or ``loop`` only (the
    others are ways to run an inner loop, which it does not have)."""
    chosen = backend or cfg.backend
    if chosen not in ("auto", NO_INNER_LOOP_BACKEND):
        raise ConfigError(
            f'backend is "{chosen}" but meta_learner "{learner}" has no inner loop to '
            'batch; use backend "auto" (or "loop")'
        )
    return NO_INNER_LOOP_BACKEND


class LearnerBase:
    """Meta-parameters, buffers, Adam, the cosine schedule and checkpoint state.

    Subclasses set :attr:`META_LEARNER`, may add state groups (:attr:`STATE_GROUPS`,
    each a ``dict[str, Tensor]`` attribute created in :meth:`init_extra_state`) and
    implement ``train_step`` and ``evaluate``.
    """

    STATE_FORMAT = 1
    META_LEARNER: ClassVar[str] = ""
    """The ``meta_learner`` value this class learns (checkpoints record it)."""
    STATE_GROUPS: ClassVar[tuple[str, ...]] = ("params", "buffers")
    """The tensor dicts saved in checkpoints, in this order."""
    OPTIMIZER_HINT: ClassVar[str] = "was it trained with another config?"
    USES_SPLIT_LABELS: ClassVar[bool] = False
    """Whether the constructor needs ``num_labels``, the training split's label count
    (learners that pre-train a classifier over every training class)."""
    """What to suggest when a checkpoint's optimizer holds another number of tensors."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str = "cpu") -> None:
        _check_supported(cfg)
        if cfg.meta_learner != self.META_LEARNER:
            raise ConfigError(
                f"meta_learner is {cfg.meta_learner!r} but {type(self).__name__} learns "
                f"{self.META_LEARNER!r}; build learners with "
                "metasuite.learner.learners.build_learner"
            )
        self.cfg = cfg
        self.device = torch.device(device)
        self.net = self.make_network()
        generator = torch.Generator().manual_seed(cfg.train_seed)
        self.params: Params = {
            k: v.to(self.device).requires_grad_() for k, v in self.initial_params(generator).items()
        }
        self.init_extra_state()
        self.buffers: Params = {k: v.to(self.device) for k, v in self.net.init_buffers().items()}
        self.optimizer: torch.optim.Optimizer | None = self.make_optimizer()
        self.epoch = 0
        self.clamp_gradients = "imagenet" in cfg.dataset_name.lower()

    # ------------------------------------------------------------------ hooks
    def make_network(self) -> MetaBackbone:
        """The network this learner trains (the config's ``backbone``: the reference
        network or any nn.Module, metasuite.learner.backbones), on the device."""
        return build_backbone(self.cfg).to(self.device)

    def initial_params(self, generator: torch.Generator) -> Params:
        """The meta-parameters before training, drawn from ``generator`` (the seed's)."""
        return self.net.init_params(generator)

    def init_extra_state(self) -> None:
        """Create learner-specific state before the optimizer is made (MAML's rates)."""

    def make_optimizer(self) -> torch.optim.Optimizer | None:
        """The outer optimizer: Adam over :meth:`meta_parameters`."""
        return torch.optim.Adam(
            self.meta_parameters(),
            lr=self.cfg.meta_learning_rate,
            weight_decay=self.cfg.weight_decay,
        )

    def meta_parameters(self) -> list[torch.Tensor]:
        """Everything the outer loop learns, in a fixed order."""
        return list(self.params.values())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The state groups, optimizer state and the epoch (and, for a backbone other than
        the reference network, what it is: checkpoints of "conv" are as they were)."""
        state: dict[str, Any] = {"format": self.STATE_FORMAT, "meta_learner": self.META_LEARNER}
        if self.cfg.backbone != "conv":
            state["backbone"] = self.net.describe()
        for group in self.STATE_GROUPS:
            state[group] = {k: v.detach().clone() for k, v in getattr(self, group).items()}
        state["optimizer"] = (
            None if self.optimizer is None else copy.deepcopy(self.optimizer.state_dict())
        )
        state["epoch"] = self.epoch
        return state

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
        for group in self.STATE_GROUPS:
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
        # Tensors with the same shapes may still differ in which are learned: compare
        # the optimizer's parameter count too (else torch raises a bare ValueError after
        # half the state has been copied).
        optimizer = state["optimizer"]
        saved = (
            len(self.meta_parameters())
            if optimizer is None and self.optimizer is None
            else sum(len(g["params"]) for g in (optimizer or {"param_groups": []})["param_groups"])
        )
        if saved != len(self.meta_parameters()) or (optimizer is None) != (self.optimizer is None):
            raise UserError(
                f"learner state: the checkpoint's optimizer holds {saved} tensors, this "
                f"config's {len(self.meta_parameters())}; {self.OPTIMIZER_HINT}"
            )
        with torch.no_grad():
            for group in self.STATE_GROUPS:
                for k, v in getattr(self, group).items():
                    v.copy_(state[group][k])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(optimizer)
            # torch restores the saved hyperparameters too; the config decides them (the
            # learning rate is set from the epoch at every step, weight decay only here).
            for group in self.optimizer.param_groups:
                group["weight_decay"] = self.cfg.weight_decay
        self.epoch = int(state["epoch"])

    # ------------------------------------------------------------------ helpers
    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"
        )

    def start_step(self, epoch: int) -> float:
        """Record the epoch and set the optimizer's learning rate for it; returns it."""
        self.epoch = int(epoch)
        lr = cosine_learning_rate(self.cfg, epoch)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        return lr

    def apply_gradients(
        self,
        grads: list[torch.Tensor],
        denominator: int,
        sync_gradients: SyncGradients | None,
    ) -> None:
        """One optimizer step on summed per-task gradients ``grads`` (one per
        :meth:`meta_parameters` tensor): divided by ``denominator`` (the meta-batch's
        task count, so ranks holding parts of it all-reduce a mean), synced, clamped for
        ImageNet-like data as the reference does, then Adam."""
        assert self.optimizer is not None
        grads = [g / denominator for g in grads]
        if sync_gradients is not None:
            sync_gradients(grads)
        if self.clamp_gradients:
            # The reference clamps the network's meta-gradients for ImageNet-like data.
            for g in grads[: len(self.params)]:
                g.clamp_(-10, 10)
        for p, g in zip(self.meta_parameters(), grads, strict=True):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


__all__ = [
    "NO_INNER_LOOP_BACKEND",
    "EvalResult",
    "LearnerBase",
    "SyncGradients",
    "SyncStats",
    "check_backend",
    "cosine_learning_rate",
    "eval_result",
    "task_accuracy",
]
