"""The few-shot conv backbone as pure functions over a parameter dict.

MAML differentiates through the network's *parameters*, so the network is not an
``nn.Module`` holding state: :class:`Backbone` is a frozen description of the
architecture, and :meth:`Backbone.forward` maps ``(params, x, step)`` to logits. This is
the reference network, written plainly (``F.conv2d``, batch or layer norm, leaky ReLU,
max-pool); the per-task loop and ``torch.func.vmap`` run it as it is, and the fast CPU
network (:class:`metasuite.learner.fast.network.FastBackbone`) is a separate object that
tests hold to it.

Architecture (the reference ``VGGReLUNormNetwork``): ``num_stages`` stages of
``cnn_blocks_per_stage`` x (3x3 conv -> norm -> leaky ReLU(0.01)), each stage ending
in a 2x2 max-pool, or, without max-pooling, with its last conv at stride 2 and a global
average pool before the classifier; then flatten and a linear layer.

Normalisation follows the reference ``MetaBatchNormLayer``: batch norm *always*
normalises with the statistics of the batch it is given (support or query set), in
training and in evaluation (transductive, as in MAML). With per-step statistics
(BNRS) the running mean/var of step ``s`` are tracked as buffers ``[S, C]`` for the
record, but never used to normalise. With BNRS the affine gamma/beta are per step too
(BNWB, ``[S, C]``), except when the inner loop adapts them, where they are shared
across steps (``[C]``), again as in the reference.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from metasuite.config import ExperimentConfig
from metasuite.errors import ConfigError

NEGATIVE_SLOPE = 0.01
"""F.leaky_relu's default, which the reference network uses."""
HEAD_NAMES: tuple[str, ...] = ("linear.weight", "linear.bias")
"""The classifier's parameter names (:attr:`Backbone.head_names`)."""

Params = dict[str, torch.Tensor]
# Detached batch statistics of one forward pass: (norm-step row, [(mean, unbiased var)]).
StatsRecord = list[tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]]


@dataclass(frozen=True)
class Backbone:
    """Static description of the network; the learnable state lives in dicts."""

    in_channels: int
    height: int
    width: int
    num_filters: int
    num_stages: int
    blocks_per_stage: int
    num_classes: int
    padding: int
    max_pooling: bool
    norm: str  # "batch_norm" | "layer_norm"
    per_step_stats: bool
    per_step_affine: bool
    num_norm_steps: int  # rows of the per-step tensors (training steps)
    learn_gamma: bool
    learn_beta: bool
    eps: float = 1e-5
    momentum: float = 0.1

    # The backbone seam (metasuite.learner.backbones.MetaBackbone): what the learners ask
    # of any network. The reference network has every fast path and no randomness.
    name: ClassVar[str] = "conv"
    supports_fast_backends: ClassVar[bool] = True
    """The vmap and grouped backends (and the fast CPU network) run this network."""
    thread_safe: ClassVar[bool] = True
    """Several threads may run forward passes at once (it holds no mutable state)."""
    normalises_with_running_stats: ClassVar[bool] = False
    """Evaluation normalises with the per-step running statistics (never: transductive)."""

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> Backbone:
        """The backbone an experiment config describes; checks that the shapes fit."""
        per_step = cfg.norm_layer == "batch_norm" and cfg.per_step_bn_statistics
        net = cls(
            in_channels=cfg.image_channels,
            height=cfg.image_height,
            width=cfg.image_width,
            num_filters=cfg.cnn_num_filters,
            num_stages=cfg.num_stages,
            blocks_per_stage=cfg.cnn_blocks_per_stage,
            num_classes=cfg.num_classes_per_set,
            padding=1 if cfg.conv_padding else 0,
            max_pooling=cfg.max_pooling,
            norm=cfg.norm_layer,
            per_step_stats=per_step,
            per_step_affine=per_step and not cfg.enable_inner_loop_optimizable_bn_params,
            num_norm_steps=cfg.number_of_training_steps_per_iter,
            learn_gamma=cfg.learnable_bn_gamma,
            learn_beta=cfg.learnable_bn_beta,
        )
        net.layer_shapes()  # raises ConfigError if the image collapses
        return net

    # ------------------------------------------------------------------ structure
    @property
    def num_layers(self) -> int:
        return self.num_stages * self.blocks_per_stage

    def stride(self, layer: int) -> int:
        """Without max-pooling the last conv of each stage downsamples (stride 2)."""
        last_in_stage = (layer + 1) % self.blocks_per_stage == 0
        return 2 if (not self.max_pooling and last_in_stage) else 1

    def pools_after(self, layer: int) -> bool:
        return self.max_pooling and (layer + 1) % self.blocks_per_stage == 0

    def layer_shapes(self) -> list[tuple[int, int]]:
        """Spatial size (h, w) of each conv layer's output, before pooling."""
        h, w = self.height, self.width
        shapes = []
        for layer in range(self.num_layers):
            s = self.stride(layer)
            h = (h + 2 * self.padding - 3) // s + 1
            w = (w + 2 * self.padding - 3) // s + 1
            if h < 1 or w < 1 or (self.pools_after(layer) and min(h, w) < 2):
                raise ConfigError(
                    f"num_stages/cnn_blocks_per_stage: {self.num_layers} conv layers "
                    f"(conv_padding={bool(self.padding)}) do not fit a "
                    f"{self.height}x{self.width} image; use fewer stages or padding"
                )
            shapes.append((h, w))
            if self.pools_after(layer):
                h, w = h // 2, w // 2
        return shapes

    def feature_size(self) -> int:
        """Length of the flattened features the classifier sees."""
        if not self.max_pooling:
            return self.num_filters  # global average pool
        h, w = self.layer_shapes()[-1]
        return self.num_filters * (h // 2) * (w // 2)

    def norm_step(self, step: int) -> int:
        """Row of the per-step tensors used at inner step ``step``.

        Evaluation may run more steps than training; the extra steps reuse the last
        trained row (the reference would index out of range).
        """
        return min(step, self.num_norm_steps - 1)

    # ------------------------------------------------------------------ seam
    def adaptable_parameter_names(self, include_norm: bool) -> tuple[str, ...]:
        """What the inner loop adapts by default: conv/linear weights and biases, and
        the norm affine parameters only with ``include_norm``
        (enable_inner_loop_optimizable_bn_params), in the reference's order."""
        names = [f"conv{i}.{k}" for i in range(self.num_layers) for k in ("weight", "bias")]
        if include_norm:
            for i in range(self.num_layers):
                if self.learn_gamma:
                    names.append(f"norm{i}.weight")
                if self.learn_beta:
                    names.append(f"norm{i}.bias")
        names += list(self.head_names)
        return tuple(names)

    def parameter_names(self) -> tuple[str, ...]:
        """Every meta-parameter's name, in :meth:`init_params` order."""
        return tuple(self.init_params(torch.Generator().manual_seed(0)))

    def mode(self, training: bool) -> contextlib.AbstractContextManager[None]:
        """Training or evaluation behaviour: the same function for this network."""
        del training
        return contextlib.nullcontext()

    def task_randomness(self, task_id: int) -> contextlib.AbstractContextManager[Any]:
        """Seeds a task's random layers: this network has none."""
        del task_id
        return contextlib.nullcontext()

    def to(self, device: torch.device) -> Backbone:
        """A description holds no tensors: the same object on every device."""
        del device
        return self

    def describe(self) -> dict[str, Any]:
        """What the manifest records of the network."""
        return {"name": self.name}

    # ------------------------------------------------------------------ state
    def init_params(self, generator: torch.Generator) -> Params:
        """Fresh meta-parameters: Xavier-uniform weights, zero biases, gamma 1, beta 0.

        A pure function of the generator's state (never the global RNG), so the
        initialisation is a function of the seed alone.
        """
        params: Params = {}
        cin = self.in_channels
        shapes = self.layer_shapes()
        for layer in range(self.num_layers):
            cout = self.num_filters
            weight = nn.init.xavier_uniform_(torch.empty(cout, cin, 3, 3), generator=generator)
            params[f"conv{layer}.weight"] = weight
            params[f"conv{layer}.bias"] = torch.zeros(cout)
            affine_shape: tuple[int, ...]
            if self.norm == "layer_norm":
                affine_shape = (cout, *shapes[layer])
            elif self.per_step_affine:
                affine_shape = (self.num_norm_steps, cout)
            else:
                affine_shape = (cout,)
            if self.learn_gamma:
                params[f"norm{layer}.weight"] = torch.ones(affine_shape)
            if self.learn_beta:
                params[f"norm{layer}.bias"] = torch.zeros(affine_shape)
            cin = cout
        weight = torch.empty(self.num_classes, self.feature_size())
        params["linear.weight"] = nn.init.xavier_uniform_(weight, generator=generator)
        params["linear.bias"] = torch.zeros(self.num_classes)
        return params

    def init_buffers(self) -> Params:
        """Per-step running statistics (BNRS), or nothing."""
        if not self.per_step_stats:
            return {}
        buffers: Params = {}
        for layer in range(self.num_layers):
            buffers[f"norm{layer}.running_mean"] = torch.zeros(
                self.num_norm_steps, self.num_filters
            )
            buffers[f"norm{layer}.running_var"] = torch.ones(self.num_norm_steps, self.num_filters)
        return buffers

    def affine(self, params: Params, layer: int, step: int) -> tuple[torch.Tensor | None, ...]:
        """(gamma, beta) of a norm layer at an inner step; None where not learnable."""
        gamma = params.get(f"norm{layer}.weight")
        beta = params.get(f"norm{layer}.bias")
        if self.per_step_affine:
            row = self.norm_step(step)
            gamma = None if gamma is None else gamma[row]
            beta = None if beta is None else beta[row]
        return gamma, beta

    @property
    def head_names(self) -> tuple[str, ...]:
        """The final classifier's tensors: what :meth:`features` leaves out (ANIL adapts
        only these; ProtoNet and the fine-tuning baselines replace them)."""
        return HEAD_NAMES

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        params: Params,
        x: torch.Tensor,
        step: int,
        stats: StatsRecord | None = None,
    ) -> torch.Tensor:
        """Logits ``[n, num_classes]`` for images ``x`` ``[n, C, H, W]`` of one task.

        ``step`` selects the per-step norm row. When ``stats`` is a list, the detached
        batch statistics of every batch-norm layer are appended to it (for the running
        statistics, which never influence the output).
        """
        out = self.features(params, x, step, stats)
        return F.linear(out, params["linear.weight"], params["linear.bias"])

    def features(
        self,
        params: Params,
        x: torch.Tensor,
        step: int,
        stats: StatsRecord | None = None,
    ) -> torch.Tensor:
        """The embedding ``[n, feature_size()]``: everything before the classifier, so
        metric learners (ProtoNet) and fitted heads (the baselines) share the body.
        Arguments as :meth:`forward`; the head tensors are not read.
        """
        record: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if stats is not None else None
        out = x
        for layer in range(self.num_layers):
            weight, bias = params[f"conv{layer}.weight"], params[f"conv{layer}.bias"]
            out = F.conv2d(out, weight, bias, stride=self.stride(layer), padding=self.padding)
            gamma, beta = self.affine(params, layer, step)
            out = self.normalise(out, gamma, beta, record)
            out = F.leaky_relu(out, NEGATIVE_SLOPE)
            if self.pools_after(layer):
                out = F.max_pool2d(out, 2, 2)
        if not self.max_pooling:
            out = out.mean(dim=(2, 3))  # global average pool
        if stats is not None and record:
            stats.append((self.norm_step(step), record))
        return out.flatten(1)

    def normalise(
        self,
        x: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        record: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> torch.Tensor:
        """Layer norm, or batch norm with the batch's own statistics (recorded when
        ``record`` is a list). A method so that the vmap backend can swap in
        elementary ops (:mod:`metasuite.learner.backends`)."""
        if self.norm == "layer_norm":
            return F.layer_norm(x, x.shape[1:], gamma, beta, self.eps)
        return batch_norm(x, gamma, beta, self.eps, record)

    def update_running_stats(self, buffers: Params, records: list[StatsRecord]) -> None:
        """Fold recorded batch statistics into the per-step running stats, in order.

        ``records`` holds one record per task, in task order; each lists that task's
        forward passes in the order they ran. Applying them task by task, pass by pass,
        reproduces the reference's in-place momentum updates exactly.
        """
        if not self.per_step_stats:
            return
        m = self.momentum
        with torch.no_grad():
            for record in records:
                for row, layers in record:
                    for layer, (mean, var) in enumerate(layers):
                        rm = buffers[f"norm{layer}.running_mean"][row]
                        rv = buffers[f"norm{layer}.running_var"][row]
                        rm.mul_(1 - m).add_(mean, alpha=m)
                        rv.mul_(1 - m).add_(var, alpha=m)


def batch_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    eps: float,
    record: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """Batch norm with the batch's own statistics (what F.batch_norm computes in
    training mode, the same kernel), optionally recording them for running stats.

    The statistics come from the kernel's saved mean and inverse std, so tracking them
    costs no extra pass over the activations.
    """
    out, mean, invstd = torch.native_batch_norm(x, gamma, beta, None, None, True, 0.0, eps)
    if record is not None:
        n = x.numel() // x.shape[1]
        with torch.no_grad():
            var = (invstd.detach().float() ** -2 - eps) * (n / max(n - 1, 1))
        record.append((mean.detach(), var))
    return out


__all__ = ["HEAD_NAMES", "NEGATIVE_SLOPE", "Backbone", "Params", "StatsRecord", "batch_norm"]
