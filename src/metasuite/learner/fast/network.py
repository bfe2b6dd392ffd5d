"""The reference network's function, laid out for a CPU: the network the grouped backend
runs.

:class:`FastBackbone` computes what :meth:`metasuite.learner.models.Backbone.forward`
computes, for T tasks at once, with three changes of layout that tests hold to the
reference (tests/learner/test_backends.py, test_models.py, fast/test_stem.py):

- T tasks side by side as one network of grouped convolutions
  (:mod:`metasuite.learner.fast.task_groups` says why): task t's filters are group t of
  every convolution, its norm channels ``t*C`` to ``(t+1)*C``, its classifier ``[t]``;
- the first block computed from image patches (:mod:`metasuite.learner.fast.stem`) when
  it is a pooling batch-norm block;
- channels-last activations, the pool-first fused batch norm -> leaky ReLU -> max-pool
  (:func:`metasuite.learner.fast.ops.norm_act_pool`) and a convolution whose second
  derivative calls the native kernels (:func:`metasuite.learner.fast.ops.conv2d`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metasuite.learner.fast.ops import conv2d, norm_act_pool, to_channels_last
from metasuite.learner.fast.stem import StemInput, stem_block
from metasuite.learner.models import NEGATIVE_SLOPE, Backbone, Params, StatsRecord

FastInput = torch.Tensor | StemInput
"""Images as :meth:`FastBackbone.prepare` returns them."""


@dataclass(frozen=True)
class FastBackbone:
    """``tasks`` copies of the reference network ``net`` side by side.

    Parameters come from :meth:`widen`, images from :meth:`prepare`; :meth:`forward`
    returns logits ``[T, n, num_classes]``. Batch norm is per channel, so per task;
    layer norm would mix a task's channels with its neighbours', so a layer-norm
    network runs one task at a time (``tasks=1``).
    """

    net: Backbone
    tasks: int = 1

    def __post_init__(self) -> None:
        if self.tasks > 1 and not self.supports_task_groups(self.net):
            raise ValueError(f"a {self.net.norm} network cannot run tasks side by side")

    @staticmethod
    def supports_task_groups(net: Backbone) -> bool:
        """Whether several tasks of ``net`` can run side by side as one network."""
        return net.norm == "batch_norm"

    @property
    def computes_stem(self) -> bool:
        """Whether the first block is computed from image patches: for a batch-norm
        block that pools."""
        return self.net.norm == "batch_norm" and self.net.pools_after(0)

    def prepare(self, x: torch.Tensor) -> FastInput:
        """T tasks' images ``[T, n, C, H, W]`` in the form :meth:`forward` takes them
        fastest: the stem's patches, or the tasks folded into channel groups ``[n, T *
        C, H, W]``. The inner loop prepares a task group's support and query sets once
        and passes them to every step."""
        if self.computes_stem:
            return StemInput.from_images(x, self.net.padding)
        tasks, n, c, h, w = x.shape
        return x.permute(1, 0, 2, 3, 4).reshape(n, tasks * c, h, w)

    def widen(self, params: Params) -> Params:
        """The parameters of the T copies side by side: copy t holds conv filters
        ``t*C`` to ``(t+1)*C`` (group t), the same norm channels, and classifier
        ``[t]``. Differentiable: the gradient of a wide tensor sums over the copies, so
        the meta-gradient sums over tasks."""
        tasks = self.tasks
        wide: Params = {}
        for name, value in params.items():
            if name.startswith("linear."):
                wide[name] = value.expand(tasks, *value.shape)
            elif value.dim() == 4:  # conv filters, as the convolutions want them: no copy per call
                wide[name] = value.repeat(tasks, 1, 1, 1).contiguous(
                    memory_format=torch.channels_last
                )
            else:  # conv bias and norm gamma/beta: channels last, per step rows first
                wide[name] = value.repeat(*([1] * (value.dim() - 1)), tasks)
        return wide

    def forward(
        self, params: Params, x: FastInput, step: int, stats: StatsRecord | None = None
    ) -> torch.Tensor:
        """Logits ``[T, n, num_classes]``; ``params`` from :meth:`widen`, ``x`` from
        :meth:`prepare`. ``step`` and ``stats`` as in the reference
        :meth:`~metasuite.learner.models.Backbone.forward` (the statistics of the T
        tasks side by side: ``[T * C]`` per layer)."""
        net = self.net
        record: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if stats is not None else None
        if isinstance(x, StemInput):
            gamma, beta = net.affine(params, 0, step)
            weight, bias = params["conv0.weight"], params["conv0.bias"]
            out = stem_block(x, weight, bias, gamma, beta, net.eps, record)
            first = 1
        else:
            out = to_channels_last(x)
            first = 0
        for layer in range(first, net.num_layers):
            weight, bias = params[f"conv{layer}.weight"], params[f"conv{layer}.bias"]
            out = conv2d(out, weight, bias, net.stride(layer), net.padding, self.tasks)
            gamma, beta = net.affine(params, layer, step)
            pools = net.pools_after(layer)
            if net.norm == "batch_norm" and pools:
                out = norm_act_pool(out, gamma, beta, net.eps, record)
                continue
            out = net.normalise(out, gamma, beta, record)
            out = F.leaky_relu(out, NEGATIVE_SLOPE)
            if pools:
                out = F.max_pool2d(out, 2, 2)
        if not net.max_pooling:
            out = out.mean(dim=(2, 3))
        if stats is not None and record:
            stats.append((net.norm_step(step), record))
        weight, bias = params["linear.weight"], params["linear.bias"]
        features = out.reshape(out.shape[0], self.tasks, -1).transpose(0, 1)  # [T, n, F]
        return torch.baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2))


__all__ = ["FastBackbone", "FastInput"]
