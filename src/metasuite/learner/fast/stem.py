"""The first block of the network (3x3 conv -> batch norm -> leaky ReLU -> 2x2 max-pool),
computed from image patches because its input is data.

Why: on a 2-core CPU the first block was about 40% of a 20-way Omniglot meta-step. Its
28x28x64 activation is 4 MB per image set, and every inner step touched it a dozen
times (statistics, pooling, the statistics' backward and double backward), all from
DRAM; its one-input-channel convolution ran at 8 GFLOP/s. But nothing upstream of the
block needs a gradient, so with ``P`` the im2col patches ``[M, K]`` of the images
(``M = n * H * W`` output positions, ``K = 9 * C_in``), everything the block computes
is a function of the weights ``W [C, K]`` and of fixed image quantities:

- the conv output is ``y = P W^T + b``;
- its batch mean is ``mean(P) W^T + b`` and its batch variance ``diag(W Cov(P) W^T)``:
  the statistics, and their derivatives of every order, are K x K algebra that never
  touches ``y``;
- the pooled values are ``A(W) + b`` with ``A(W) = gather(P W^T, argmax)``, linear in
  ``W``; its adjoint ``A^T(g) = (P^T scatter(g, argmax))^T`` is the backward (one
  scatter and a skinny matrix product), and the adjoint's backward is ``A`` again.

With several tasks folded into channel groups (:mod:`metasuite.learner.fast.task_groups`), each
task has its own patches and weights, and the full-resolution work runs task by task
through one reused buffer.

Only the argmax needs the full-resolution ``y``, computed without autograd. Pooling
first, then normalising, is exact for the same reason as in
:func:`metasuite.learner.fast.ops.norm_act_pool` (the block is monotone per channel). The
statistics are the same function as the reference's, evaluated in a different order,
so they agree to float rounding (a test holds the block to the reference, values and
first and second derivatives).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from metasuite.learner.fast.ops import normalise_pooled, spatial_major

KERNEL = 3


@dataclass(frozen=True)
class StemInput:
    """Image sets prepared for the first block, one per task: computed once per task's
    support or query set and reused by every inner step, where only the weights change."""

    patches: torch.Tensor
    """``[T, M, K]`` im2col rows per task, ordered (image, output row, output column)."""
    patches_t: torch.Tensor
    """``[T, K, M]`` contiguous: the adjoint's product reads the patches this way."""
    mean: torch.Tensor
    """``[T, K]`` mean patch."""
    cov: torch.Tensor
    """``[T, K, K]`` population covariance of the patches."""
    shape: tuple[int, int, int, int]
    """(tasks, images per task, output height, output width) of the convolution."""

    @classmethod
    def from_images(cls, x: torch.Tensor, padding: int) -> StemInput:
        """Patches of one task's images ``[n, C, H, W]``, or of several tasks' images
        ``[T, n, C, H, W]``, for a 3x3, stride-1 convolution."""
        if x.dim() == 4:
            x = x.unsqueeze(0)
        tasks, n, c, h, w = x.shape
        with torch.autocast(x.device.type, enabled=False):  # the statistics want precision
            cols = F.unfold(x.reshape(tasks * n, c, h, w), KERNEL, padding=padding)
            k = cols.shape[1]  # cols: [T * n, K, L]
            patches_t = cols.view(tasks, n, k, -1).permute(0, 2, 1, 3).reshape(tasks, k, -1)
            patches_t = patches_t.contiguous()
            mean = patches_t.mean(2)
            centred = patches_t - mean.unsqueeze(2)  # centred first: no cancellation in Cov
            cov = centred @ centred.transpose(1, 2) / patches_t.shape[2]
        out_h, out_w = h + 2 * padding - KERNEL + 1, w + 2 * padding - KERNEL + 1
        return cls(patches_t.transpose(1, 2), patches_t, mean, cov, (tasks, n, out_h, out_w))

    @property
    def positions(self) -> int:
        """Output positions per task and channel: the statistics' sample count."""
        return self.patches_t.shape[2]


_SCRATCH = threading.local()
_MAX_POOL_BACKWARD = torch.ops.aten.max_pool2d_with_indices_backward.grad_input


def _scratch(numel: int, like: torch.Tensor) -> torch.Tensor:
    """A per-thread buffer for one task's full-resolution product, reused by every call:
    a fresh 4 MB tensor per call costs page faults and evicts the caches. It lives as
    long as the thread (the size of one first-layer activation) and is only ever used
    between two statements of one Function, so nothing else sees it."""
    buffer = getattr(_SCRATCH, "buffer", None)
    if (
        buffer is None
        or buffer.numel() < numel
        or buffer.dtype != like.dtype
        or buffer.device != like.device
    ):
        buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
        _SCRATCH.buffer = buffer
    return buffer[:numel]


class _PooledProduct(torch.autograd.Function):
    """``W [T * C, K]`` -> ``A(W)``: ``P W^T`` at its 2x2 window maxima, ``[n, L', T *
    C]``. With ``sign`` (per channel, +-1 or 0) the maxima of ``sign * y`` are taken,
    the windows' order under a gamma of that sign; the values are ``y``'s own.

    Task by task, through one reused full-resolution buffer (see :func:`_scratch`);
    the argmax of task t, max-pool's ``[n, C, H', W']`` indices, is saved for the
    adjoint."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, weight: torch.Tensor, inputs: StemInput, sign: torch.Tensor | None
    ) -> torch.Tensor:
        tasks, n, h, w = inputs.shape
        c = weight.shape[0] // tasks
        values = weight.new_empty(n, (h // 2) * (w // 2), tasks, c)
        buffer = _scratch(n * h * w * c, weight).view(n * h * w, c)
        indices = []
        for t in range(tasks):
            rows = slice(t * c, (t + 1) * c)
            y = torch.mm(inputs.patches[t], weight[rows].t(), out=buffer)
            signed = y if sign is None else y * sign[rows]
            pooled, index = F.max_pool2d(
                signed.view(n, h, w, c).permute(0, 3, 1, 2), 2, 2, return_indices=True
            )
            # Under a sign the pooled values are not y's: read y at the argmax instead.
            values[:, :, t] = (
                spatial_major(pooled)
                if sign is None
                else y.view(n, h * w, c).gather(1, spatial_major(index))
            )
            indices.append(index)
        ctx.inputs = inputs
        ctx.save_for_backward(*indices)
        return values.view(n, -1, tasks * c)

    @staticmethod
    def backward(ctx, g_values: torch.Tensor):  # type: ignore[override]
        indices = ctx.saved_tensors
        return _PooledProductAdjoint.apply(g_values, ctx.inputs, *indices), None, None


class _PooledProductAdjoint(torch.autograd.Function):
    """``g [n, L', T * C]`` -> ``A^T(g) [T * C, K]``: the weight gradient of the pooled
    product. Linear in ``g``; its own backward is ``A`` (no third derivatives)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, g: torch.Tensor, inputs: StemInput, *indices: torch.Tensor
    ) -> torch.Tensor:
        tasks, n, h, w = inputs.shape
        c, h2, w2 = indices[0].shape[1:]
        per_task = g.to(inputs.patches.dtype).view(n, h2, w2, tasks, c)
        grad = per_task.new_empty(tasks * c, inputs.patches.shape[2])
        full = _scratch(n * h * w * c, per_task).view(n, h, w, c).permute(0, 3, 1, 2)
        for t in range(tasks):
            # The scatter of g to the window maxima, zeros elsewhere: max-pool's own
            # backward, written into the reused buffer.
            planes = per_task[:, :, :, t].contiguous().permute(0, 3, 1, 2)
            _MAX_POOL_BACKWARD(
                planes, full, [2, 2], [2, 2], [0, 0], [1, 1], False, indices[t], grad_input=full
            )
            rows = full.permute(0, 2, 3, 1).reshape(-1, c)  # a view: full is channels-last
            grad[t * c : (t + 1) * c] = torch.mm(inputs.patches_t[t], rows).t()
        ctx.inputs = inputs
        ctx.save_for_backward(*indices)
        return grad

    @staticmethod
    @once_differentiable
    def backward(ctx, gg_weight: torch.Tensor):  # type: ignore[override]
        indices = ctx.saved_tensors
        inputs: StemInput = ctx.inputs
        tasks, n, h, w = inputs.shape
        c, h2, w2 = indices[0].shape[1:]
        gg = gg_weight.to(inputs.patches.dtype)
        out = gg.new_empty(n, h2 * w2, tasks, c)
        buffer = _scratch(n * h * w * c, gg).view(n * h * w, c)
        for t in range(tasks):
            y = torch.mm(inputs.patches[t], gg[t * c : (t + 1) * c].t(), out=buffer)
            out[:, :, t] = y.view(n, h * w, c).gather(1, spatial_major(indices[t]))
        return (out.view(n, -1, tasks * c), None, *([None] * len(indices)))


def stem_block(
    inputs: StemInput,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    eps: float,
    record: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """``max_pool2d(leaky_relu(batch_norm(conv2d(x, weight, bias), gamma, beta)), 2, 2)``
    with batch statistics, for the images ``inputs`` was made from (3x3, stride 1).

    With T tasks, ``weight`` is ``[T * C, C_in, 3, 3]`` (task t's filters are rows
    ``t*C`` to ``(t+1)*C``, a grouped convolution) and bias, gamma and beta ``[T * C]``.
    The result is ``[n, T * C, H/2, W/2]`` in channels-last layout, in the images'
    dtype: autocast is off here, because the block is cheap now and its statistics want
    the precision. When ``record`` is a list, the detached (mean, unbiased variance)
    are appended.
    """
    with torch.autocast(weight.device.type, enabled=False):
        tasks, n, h, w = inputs.shape
        w2 = weight.reshape(weight.shape[0], -1).to(inputs.patches.dtype)
        sign = None
        if gamma is not None and not bool((gamma > 0).all()):
            sign = torch.sign(gamma.detach()).to(w2.dtype)
        pooled = _PooledProduct.apply(w2, inputs, sign)
        per_task = w2.view(tasks, -1, w2.shape[1])  # [T, C, K]
        mean = torch.bmm(per_task, inputs.mean.unsqueeze(2)).flatten()
        # diag(W Cov W^T) is >= 0 but for rounding.
        var = (torch.bmm(per_task, inputs.cov) * per_task).sum(2).flatten().clamp_min(0.0)
        if bias is not None:
            pooled = pooled + bias.to(w2.dtype)
            mean = mean + bias.to(w2.dtype)
        return normalise_pooled(
            pooled, mean, var, gamma, beta, eps, record, inputs.positions, (n, h // 2, w // 2)
        )


__all__ = ["StemInput", "stem_block"]
