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

Only the argmax needs the full-resolution ``y``, computed without autograd. Pooling
first, then normalising, is exact for the same reason as in
:func:`metasuite.fastops.norm_act_pool` (the block is monotone per channel). The
statistics are the same function as the reference's, evaluated in a different order,
so they agree to float rounding (a test holds the block to the reference, values and
first and second derivatives).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from metasuite.fastops import normalise_pooled, spatial_major

KERNEL = 3


@dataclass(frozen=True)
class StemInput:
    """A set of images prepared for the first block: computed once per task's support
    or query set and reused by every inner step, where only the weights change."""

    patches: torch.Tensor
    """``[M, K]`` im2col rows, ordered (image, output row, output column)."""
    patches_t: torch.Tensor
    """``[K, M]`` contiguous: the adjoint's product reads the patches this way."""
    mean: torch.Tensor
    """``[K]`` mean patch."""
    cov: torch.Tensor
    """``[K, K]`` population covariance of the patches."""
    shape: tuple[int, int, int]
    """(images, output height, output width) of the convolution."""

    @classmethod
    def from_images(cls, x: torch.Tensor, padding: int) -> StemInput:
        """Patches of images ``x [n, C, H, W]`` for a 3x3, stride-1 convolution."""
        n, _, h, w = x.shape
        with torch.autocast(x.device.type, enabled=False):  # the statistics want precision
            cols = F.unfold(x, KERNEL, padding=padding)  # [n, K, L]
            k = cols.shape[1]
            patches_t = cols.permute(1, 0, 2).reshape(k, -1).contiguous()
            mean = patches_t.mean(1)
            centred = patches_t - mean.unsqueeze(1)  # centred first: no cancellation in Cov
            cov = centred @ centred.t() / patches_t.shape[1]
        out_h, out_w = h + 2 * padding - KERNEL + 1, w + 2 * padding - KERNEL + 1
        return cls(patches_t.t(), patches_t, mean, cov, (n, out_h, out_w))

    @property
    def positions(self) -> int:
        return self.patches_t.shape[1]


class _PooledProduct(torch.autograd.Function):
    """``W [C, K]`` -> (``A(W)``: ``P W^T`` at its 2x2 window maxima ``[n, L', C]``, the
    argmax). With ``sign`` (per channel, +-1 or 0) the maxima of ``sign * y`` are taken,
    the windows' order under a gamma of that sign; the values are ``y``'s own."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, weight: torch.Tensor, inputs: StemInput, sign: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, h, w = inputs.shape
        y = torch.mm(inputs.patches, weight.t())  # [M, C]
        c = y.shape[1]
        planes = (y if sign is None else y * sign).view(n, h, w, c).permute(0, 3, 1, 2)
        values, index = F.max_pool2d(planes, 2, 2, return_indices=True)
        index = spatial_major(index)
        # Under a sign the pooled values are not y's: read y at the argmax instead.
        rows = y.view(n, h * w, c)
        values = spatial_major(values) if sign is None else rows.gather(1, index)
        ctx.inputs = inputs
        ctx.save_for_backward(index)
        ctx.mark_non_differentiable(index)
        return values, index

    @staticmethod
    def backward(ctx, g_values: torch.Tensor, _g_index: None):  # type: ignore[override]
        (index,) = ctx.saved_tensors
        return _PooledProductAdjoint.apply(g_values, ctx.inputs, index), None, None


class _PooledProductAdjoint(torch.autograd.Function):
    """``g [n, L', C]`` -> ``A^T(g) [C, K]``: the weight gradient of the pooled product.
    Linear in ``g``; its own backward is ``A`` (third derivatives are not supported)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, g: torch.Tensor, inputs: StemInput, index: torch.Tensor
    ) -> torch.Tensor:
        n, h, w = inputs.shape
        c = g.shape[-1]
        # 2x2 windows with stride 2 are disjoint: every position gets at most one value.
        g = g.to(inputs.patches.dtype)
        full = g.new_zeros(n, h * w, c).scatter_(1, index, g)
        ctx.inputs = inputs
        ctx.save_for_backward(index)
        return torch.mm(inputs.patches_t, full.view(-1, c)).t()

    @staticmethod
    @once_differentiable
    def backward(ctx, gg_weight: torch.Tensor):  # type: ignore[override]
        (index,) = ctx.saved_tensors
        inputs: StemInput = ctx.inputs
        n, h, w = inputs.shape
        y = torch.mm(inputs.patches, gg_weight.to(inputs.patches.dtype).t())
        return y.view(n, h * w, -1).gather(1, index), None, None


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

    The result is ``[n, C, H/2, W/2]`` in channels-last layout, in the images' dtype:
    autocast is off here, because the block is cheap now and its statistics want the
    precision.
    When ``record`` is a list, the detached (mean, unbiased variance) are appended.
    """
    with torch.autocast(weight.device.type, enabled=False):
        c = weight.shape[0]
        w2 = weight.reshape(c, -1).to(inputs.patches.dtype)
        sign = None
        if gamma is not None and not bool((gamma > 0).all()):
            sign = torch.sign(gamma.detach()).to(w2.dtype)
        pooled, _ = _PooledProduct.apply(w2, inputs, sign)
        mean = torch.mv(w2, inputs.mean)
        var = ((w2 @ inputs.cov) * w2).sum(1).clamp_min(0.0)  # >= 0 but for rounding
        if bias is not None:
            pooled = pooled + bias.to(w2.dtype)
            mean = mean + bias.to(w2.dtype)
        n, h, w = inputs.shape
        return normalise_pooled(
            pooled, mean, var, gamma, beta, eps, record, inputs.positions, (n, h // 2, w // 2)
        )


__all__ = ["StemInput", "stem_block"]
