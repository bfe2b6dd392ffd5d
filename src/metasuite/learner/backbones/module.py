"""Any ``nn.Module`` as a MAML++ backbone, through ``torch.func.functional_call``.

The MAML++ math (:func:`metasuite.learner.reference.adapt`) runs a network as a function
of a parameter dict. :class:`ModuleBackbone` makes an unmodified ``nn.Module`` such a
function: each forward pass calls the module with the given tensors swapped in by name.
What MAML++ adds on top of a plain module is kept *outside* it, so the module is never
rewritten and its own ``state_dict`` (pretrained weights) still loads into it:

- **per-step batch-norm weights (BNWB)**: every BatchNorm layer's ``weight``/``bias`` is
  a meta-parameter of shape ``[S, C]``; inner step ``s`` swaps in row ``s``;
- **per-step running statistics (BNRS)**: buffers ``<layer>.running_mean``/``running_var``
  of shape ``[S, C]``, folded in task order exactly as the reference network does;
- **transductive batch norm** (the reference's, and MAML's): every BatchNorm layer
  normalises with the statistics of the batch it is given, in training and evaluation.
  The layer runs in training mode on fresh scratch buffers with momentum 1, so after
  the pass the scratch buffers hold exactly that batch's mean and unbiased variance:
  that is the statistics record, at no extra pass over the activations (and a
  recomputation under activation checkpointing writes the same values again).

Other layers follow ``mode(training)``: dropout is on while meta-training and off in
evaluation, seeded per task (:meth:`ModuleBackbone.task_randomness`), so a resumed run
draws the same masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from metasuite.errors import ConfigError
from metasuite.learner.models import Params, StatsRecord

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)
"""Layers whose parameters the inner loop leaves alone by default, as the reference."""

DEFAULT_MOMENTUM = 0.1
"""Running-statistics momentum of a batch-norm layer built with ``momentum=None``."""


def task_seed(seed: int, task_id: int) -> int:
    """The seed of one task's random layers: a pure function of (seed, task index)."""
    return int(np.random.SeedSequence([seed, task_id]).generate_state(1, np.uint64)[0] >> 1)


@dataclass(eq=False)
class ModuleBackbone:
    """An ``nn.Module`` mapping a batch to logits, run as ``forward(params, x, step)``.

    ``bn_layers`` are the module names of the batch-norm layers given per-step treatment
    (all of the module's, in registration order); ``per_step_stats`` / ``per_step_affine``
    are BNRS / BNWB as for the reference network.
    """

    module: nn.Module
    name: str
    kwargs: dict[str, Any]
    head: str
    num_norm_steps: int
    per_step_stats: bool
    per_step_affine: bool
    running_at_eval: bool
    checkpointing: bool
    seed: int
    bn_layers: tuple[str, ...] = field(init=False)
    momentum: dict[str, float] = field(init=False)
    per_step_affine_names: frozenset[str] = field(init=False)
    training: bool = field(init=False, default=True)

    supports_fast_backends: ClassVar[bool] = False
    thread_safe: ClassVar[bool] = False
    """functional_call swaps tensors into the one module: one forward at a time."""

    def __post_init__(self) -> None:
        bns = {
            n: m
            for n, m in self.module.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        }
        self.bn_layers = tuple(bns)
        self.momentum = {
            n: DEFAULT_MOMENTUM if m.momentum is None else float(m.momentum) for n, m in bns.items()
        }
        for m in bns.values():
            # Scratch buffers with momentum 1 end each pass holding the batch's own
            # statistics (see the module docstring); num_batches_tracked is scratch too.
            m.momentum = 1.0
            m.track_running_stats = True
        self.per_step_affine_names = frozenset(
            f"{layer}.{k}"
            for layer in (self.bn_layers if self.per_step_affine else ())
            for k, _ in self.module.get_submodule(layer).named_parameters(recurse=False)
        )
        self.set_mode(True)

    # ------------------------------------------------------------------ structure
    @property
    def normalises_with_running_stats(self) -> bool:
        return self.running_at_eval

    @property
    def head_names(self) -> tuple[str, ...]:
        """The classifier's tensors (what ANIL adapts)."""
        return tuple(
            f"{self.head}.{k}" for k, _ in self.module.get_submodule(self.head).named_parameters()
        )

    def parameter_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.module.named_parameters())

    def norm_parameter_names(self) -> frozenset[str]:
        """Parameters of normalisation layers."""
        return frozenset(
            f"{mod}.{k}" if mod else k
            for mod, m in self.module.named_modules()
            if isinstance(m, NORM_TYPES)
            for k, _ in m.named_parameters(recurse=False)
        )

    def adaptable_parameter_names(self, include_norm: bool) -> tuple[str, ...]:
        """Every parameter but the norm layers' (with ``include_norm``: every one)."""
        norms = set() if include_norm else self.norm_parameter_names()
        return tuple(n for n in self.parameter_names() if n not in norms)

    def norm_step(self, step: int) -> int:
        """Row of the per-step tensors at inner step ``step`` (extra evaluation steps
        reuse the last trained row, as the reference network does)."""
        return min(step, self.num_norm_steps - 1)

    def describe(self) -> dict[str, Any]:
        """What the manifest and checkpoints record: name, arguments, parameter shapes."""
        record = {
            "name": self.name,
            "kwargs": self.kwargs,
            "head": self.head,
            "batch_norm_mode": "running" if self.running_at_eval else "transductive",
            "parameters": {n: list(p.shape) for n, p in self.module.named_parameters()},
        }
        extra = getattr(self.module, "manifest_record", None)  # e.g. "hf": its attention
        return record if extra is None else {**record, "module": dict(extra)}

    # ------------------------------------------------------------------ state
    def init_params(self, generator: torch.Generator | None = None) -> Params:
        """The module's own initial parameters (it was built seeded), the batch-norm
        affine ones widened to ``[S, C]`` under BNWB."""
        del generator  # the factory ran under the experiment's seed
        per_step = self.per_step_affine_names
        out: Params = {}
        for n, p in self.module.named_parameters():
            value = p.detach()
            if n in per_step:
                value = value.expand(self.num_norm_steps, *value.shape)
            out[n] = value.clone()
        return out

    def init_buffers(self) -> Params:
        """Per-step running statistics (BNRS) from the module's own, or nothing."""
        if not self.per_step_stats:
            return {}
        out: Params = {}
        for layer in self.bn_layers:
            m = self.module.get_submodule(layer)
            for k in ("running_mean", "running_var"):
                own = getattr(m, k)
                if own is None:  # built with track_running_stats=False: BN's own start
                    own = (torch.zeros if k == "running_mean" else torch.ones)(m.num_features)
                out[f"{layer}.{k}"] = own.detach().expand(self.num_norm_steps, -1).clone()
        return out

    def to(self, device: torch.device) -> ModuleBackbone:
        """Moves the module's own tensors (buffers that are not swapped in)."""
        self.module.to(device)
        return self

    # ------------------------------------------------------------------ modes
    def set_mode(self, training: bool) -> None:
        """Dropout and co. as ``training`` says; batch norm in training mode unless it
        normalises with running statistics in evaluation."""
        self.training = training
        self.module.train(training)
        bn_training = training or not self.running_at_eval
        for layer in self.bn_layers:
            self.module.get_submodule(layer).train(bn_training)

    @contextlib.contextmanager
    def mode(self, training: bool) -> Iterator[None]:
        """Meta-training (random layers on) or evaluation (off) for the block."""
        before = self.training
        if before != training:
            self.set_mode(training)
        try:
            yield
        finally:
            if before != training:
                self.set_mode(before)

    @contextlib.contextmanager
    def task_randomness(self, task_id: int) -> Iterator[None]:
        """While meta-training, the task's random layers (dropout, DropBlock) draw from
        the global generator seeded with (seed, task index), restored afterwards: the
        masks do not depend on what ran before, so a resumed run draws the same ones."""
        if not self.training:
            yield
            return
        device = next(iter(self.module.parameters()), torch.empty(0)).device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=device.type):
            torch.manual_seed(task_seed(self.seed, task_id))
            yield

    # ------------------------------------------------------------------ forward
    def forward(
        self, params: Params, x: Any, step: int, stats: StatsRecord | None = None
    ) -> torch.Tensor:
        """Logits ``[n, num_classes]`` of the module with ``params`` swapped in, per-step
        rows taken at ``step``; with ``stats`` a list, the batch statistics of every
        batch-norm layer are appended (for BNRS)."""
        row = self.norm_step(step)
        per_step = self.per_step_affine_names
        tensors = {n: (v[row] if n in per_step else v) for n, v in params.items()}
        reference = next(iter(params.values()))
        scratch: list[tuple[torch.Tensor, torch.Tensor]] = []
        use_running = self.running_at_eval and not self.training
        for layer in self.bn_layers:
            if use_running:
                tensors[f"{layer}.running_mean"] = params[f"{layer}.running_mean"][row]
                tensors[f"{layer}.running_var"] = params[f"{layer}.running_var"][row]
                continue
            channels = self.module.get_submodule(layer).num_features
            mean = reference.new_zeros(channels, dtype=_stat_dtype(reference))
            var = reference.new_ones(channels, dtype=_stat_dtype(reference))
            tensors[f"{layer}.running_mean"] = mean
            tensors[f"{layer}.running_var"] = var
            tensors[f"{layer}.num_batches_tracked"] = reference.new_zeros((), dtype=torch.long)
            scratch.append((mean, var))

        def call(inputs: Any) -> torch.Tensor:
            return functional_call(self.module, tensors, (inputs,))

        if self.checkpointing and torch.is_grad_enabled():
            out = checkpoint(call, x, use_reentrant=False)
        else:
            out = call(x)
        if stats is not None and scratch:
            stats.append((row, scratch))
        return out

    def features(
        self, params: Params, x: Any, step: int, stats: StatsRecord | None = None
    ) -> torch.Tensor:
        """The embedding ``[n, D]``: what the module feeds its head (ProtoNet and the
        fine-tuning baselines replace the head). The head's input is caught by a hook,
        so the module is still not rewritten."""
        if not self.head:
            raise ConfigError(
                f"head: backbone {self.name!r} has no classifier layer to take the "
                "embedding before; name it in 'head'"
            )
        caught: list[torch.Tensor] = []

        def catch(_module: nn.Module, args: tuple[Any, ...]) -> None:
            caught.append(args[0])

        # The head runs on the module's own tensors: a learner's tensors of the same
        # name (a classifier over other labels) need not fit it.
        prefix = f"{self.head}."
        body = {k: v for k, v in params.items() if not k.startswith(prefix)}
        handle = self.module.get_submodule(self.head).register_forward_pre_hook(catch)
        try:
            self.forward(body, x, step, stats)
        finally:
            handle.remove()
        return caught[-1].flatten(1)

    def update_running_stats(self, buffers: Params, records: list[StatsRecord]) -> None:
        """Fold recorded batch statistics into the per-step running statistics, task by
        task and pass by pass (the reference network's order and momentum rule)."""
        if not self.per_step_stats:
            return
        with torch.no_grad():
            for record in records:
                for row, layers in record:
                    for layer, (mean, var) in zip(self.bn_layers, layers, strict=True):
                        m = self.momentum[layer]
                        rm = buffers[f"{layer}.running_mean"][row]
                        rv = buffers[f"{layer}.running_var"][row]
                        rm.mul_(1 - m).add_(mean.to(rm.dtype), alpha=m)
                        rv.mul_(1 - m).add_(var.to(rv.dtype), alpha=m)


def _stat_dtype(reference: torch.Tensor) -> torch.dtype:
    """Batch norm keeps its statistics in the parameters' float type (float32 under
    bf16 autocast, float64 in the float64 tests)."""
    return reference.dtype if reference.is_floating_point() else torch.float32


__all__ = ["DEFAULT_MOMENTUM", "NORM_TYPES", "ModuleBackbone", "task_seed"]
