"""The few-shot conv backbone as pure functions over a parameter dict.

MAML differentiates through the network's *parameters*, so the network is not an
``nn.Module`` holding state: :class:`Backbone` is a frozen description of the
architecture, and :meth:`Backbone.forward` maps ``(params, x, step)`` to logits. The
same function serves the per-task reference loop, ``torch.func.vmap`` and the batched
CPU path, which is what lets a test hold them to the same numbers.

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

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metasuite.config import ExperimentConfig
from metasuite.errors import ConfigError
from metasuite.learner.fast.ops import NEGATIVE_SLOPE, conv2d, norm_act_pool, to_channels_last
from metasuite.learner.fast.stem import StemInput, stem_block

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
    fused_blocks: bool = False
    """Run in channels-last layout and compute each batch norm -> leaky ReLU -> max-pool
    block with :func:`metasuite.learner.fast.ops.norm_act_pool` (same function, far less
    full-resolution memory traffic on a CPU)."""
    composite_norm: bool = False
    """Normalise with elementary ops instead of the fused kernels. Same function; needed
    under torch.func.vmap, whose batching rule for the fused norms' backward is wrong
    when gamma/beta are batched (pytorch/functorch#534)."""

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
            weight = torch.empty(cout, cin, 3, 3)
            _xavier_uniform(weight, generator)
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
        _xavier_uniform(weight, generator)
        params["linear.weight"] = weight
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

    # ------------------------------------------------------------------ forward
    @property
    def computes_stem(self) -> bool:
        """Whether the first block is computed from image patches
        (:mod:`metasuite.learner.fast.stem`): on the fused CPU path, for a batch-norm block that
        pools."""
        return self.fused_blocks and self.norm == "batch_norm" and self.pools_after(0)

    @property
    def supports_task_groups(self) -> bool:
        """Whether several tasks can run side by side as one grouped network
        (:mod:`metasuite.learner.fast.task_groups`): batch norm is per channel, so per task; layer
        norm would mix a task's channels with its neighbours'."""
        return self.norm == "batch_norm"

    def prepare(self, x: torch.Tensor) -> torch.Tensor | StemInput:
        """Images in the form :meth:`forward` takes them fastest: one task's ``[n, C, H,
        W]``, or T tasks' ``[T, n, C, H, W]`` folded into channel groups ``[n, T * C,
        H, W]``. The inner loop prepares a task's support and query sets once and passes
        them to every step."""
        if self.computes_stem:
            return StemInput.from_images(x, self.padding)
        if x.dim() == 5:
            tasks, n, c, h, w = x.shape
            return x.permute(1, 0, 2, 3, 4).reshape(n, tasks * c, h, w)
        return x

    def widen(self, params: Params, tasks: int) -> Params:
        """The parameters of ``tasks`` copies of the network side by side, as one
        grouped network: copy t holds conv filters ``t*C`` to ``(t+1)*C`` (group t),
        the same norm channels, and classifier ``[t]``. Differentiable: the gradient of
        a wide tensor sums over the copies, so the meta-gradient sums over tasks."""
        wide: Params = {}
        for name, value in params.items():
            if name.startswith("linear."):
                wide[name] = value.expand(tasks, *value.shape)
            elif value.dim() == 4:  # conv filters
                wide[name] = value.repeat(tasks, 1, 1, 1)
                if self.fused_blocks:  # what the convolutions want: no copy per call
                    wide[name] = wide[name].contiguous(memory_format=torch.channels_last)
            else:  # conv bias and norm gamma/beta: channels last, per step rows first
                wide[name] = value.repeat(*([1] * (value.dim() - 1)), tasks)
        return wide

    def forward(
        self,
        params: Params,
        x: torch.Tensor | StemInput,
        step: int,
        stats: StatsRecord | None = None,
        tasks: int = 1,
    ) -> torch.Tensor:
        """Logits ``[n, num_classes]`` for images ``x`` ``[n, C, H, W]`` of ONE task
        (or those images as :meth:`prepare` returned them).

        With ``tasks`` = T, the network is T copies side by side: ``params`` come from
        :meth:`widen`, ``x`` from :meth:`prepare` of ``[T, n, C, H, W]`` images, and
        the logits are ``[T, n, num_classes]``.

        ``step`` selects the per-step norm row. When ``stats`` is a list, the detached
        batch statistics of every batch-norm layer are appended to it (for the running
        statistics, which never influence the output).
        """
        if tasks > 1 and not self.supports_task_groups:
            raise ValueError(f"a {self.norm} network cannot run tasks side by side")
        record: list[tuple[torch.Tensor, torch.Tensor]] = []
        if not isinstance(x, StemInput):
            x = self.prepare(x)
        if isinstance(x, StemInput):
            gamma, beta = self.affine(params, 0, step)
            out = stem_block(
                x,
                params["conv0.weight"],
                params["conv0.bias"],
                gamma,
                beta,
                self.eps,
                record if stats is not None else None,
            )
            first = 1
        else:
            out = to_channels_last(x) if self.fused_blocks else x
            first = 0
        for layer in range(first, self.num_layers):
            out = (conv2d if self.fused_blocks else F.conv2d)(
                out,
                params[f"conv{layer}.weight"],
                params[f"conv{layer}.bias"],
                stride=self.stride(layer),
                padding=self.padding,
                groups=tasks,
            )
            gamma, beta = self.affine(params, layer, step)
            out = self._norm_act_pool(
                out, layer, gamma, beta, record if stats is not None else None
            )
        if not self.max_pooling:
            out = out.mean(dim=(2, 3))
        if stats is not None and record:
            stats.append((self.norm_step(step), record))
        weight, bias = params["linear.weight"], params["linear.bias"]
        if weight.dim() == 2:  # one network
            return F.linear(out.flatten(1), weight, bias)
        features = out.reshape(out.shape[0], tasks, -1).transpose(0, 1)  # [T, n, F]
        return torch.baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2))

    def _norm_act_pool(
        self,
        out: torch.Tensor,
        layer: int,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        record: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> torch.Tensor:
        """norm -> leaky ReLU -> (max-pool at the end of a stage) after conv ``layer``."""
        pools = self.pools_after(layer)
        if self.norm == "layer_norm":
            if self.composite_norm:
                out = _composite_norm(out, gamma, beta, self.eps, (1, 2, 3), None)
            else:
                out = F.layer_norm(out, out.shape[1:], gamma, beta, self.eps)
        elif self.fused_blocks and pools:
            return norm_act_pool(out, gamma, beta, self.eps, record)
        elif self.composite_norm:
            out = _composite_norm(out, gamma, beta, self.eps, (0, 2, 3), record)
        else:
            out = batch_norm(out, gamma, beta, self.eps, record)
        out = F.leaky_relu(out, NEGATIVE_SLOPE)
        return F.max_pool2d(out, 2, 2) if pools else out

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


def _composite_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    eps: float,
    dims: tuple[int, ...],
    record: list[tuple[torch.Tensor, torch.Tensor]] | None,
) -> torch.Tensor:
    """Batch norm (dims 0, 2, 3) or layer norm (dims 1, 2, 3) from elementary ops.

    gamma/beta are per channel ``[C]`` for batch norm and ``[C, H, W]`` for layer norm.
    """
    var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
    out = (x - mean) * torch.rsqrt(var + eps)
    shape = (1, -1, 1, 1) if dims == (0, 2, 3) else (1, *x.shape[1:])
    if gamma is not None:
        out = out * gamma.reshape(shape)
    if beta is not None:
        out = out + beta.reshape(shape)
    if record is not None:
        n = x.numel() // x.shape[1]
        with torch.no_grad():
            record.append((mean.detach().flatten(), var.detach().flatten() * (n / max(n - 1, 1))))
    return out


def _xavier_uniform(t: torch.Tensor, generator: torch.Generator) -> None:
    """nn.init.xavier_uniform_ with an explicit generator (gain 1)."""
    fan_out = t.shape[0] * (t[0][0].numel() if t.dim() > 2 else 1)
    fan_in = t.shape[1] * (t[0][0].numel() if t.dim() > 2 else 1)
    bound = (6.0 / (fan_in + fan_out)) ** 0.5
    with torch.no_grad():
        t.uniform_(-bound, bound, generator=generator)


__all__ = ["NEGATIVE_SLOPE", "Backbone", "Params", "StatsRecord", "batch_norm"]
