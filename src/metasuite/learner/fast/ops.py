"""Batch norm -> leaky ReLU -> 2x2 max-pool as one CPU-friendly composition.

Same function as ``max_pool2d(leaky_relu(batch_norm(x)))`` with batch statistics, laid
out so that the expensive full-resolution tensor is touched as little as possible, in
the forward, the inner-loop backward and the outer (second-order) backward alike. On a
2-core CPU the reference block is memory-bound: a profile of one 20-way meta-step spent
about half its time in element-wise work on the 28x28 activations of the first layer
(batch-norm double backward, leaky ReLU, and a slow NCHW max-pool kernel).

Why pooling can go first: per channel, ``f(x) = leaky_relu(gamma * (x - mean) * invstd
+ beta)`` is monotonic, increasing where gamma > 0 and decreasing where gamma < 0, so
``maxpool(f(x)) = f(x[argmax of sign(gamma) * x])``; with gamma = 0 every value in a
window is equal and max-pool picks the first, which a zero sign reproduces. The
statistics still come from the whole full-resolution tensor. In floating point, two
different pre-pool values can round to the same normalised value, and then the two
forms may pick different (equal-valued) window elements; that is the only difference.

The full-resolution work left: the conv output, one statistics pass, the pooling
indices, and in the backward one ``addcmul`` for the statistics path with the pooled
gradient scattered into it. Everything runs in channels-last layout, where the
statistics are reductions over rows and the max-pool kernel is fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from metasuite.learner.models import NEGATIVE_SLOPE


class PooledMoments(torch.autograd.Function):
    """``x`` -> (per-channel mean, biased variance, ``x`` at the pooling window maxima).

    ``x`` is ``[n, C, H, W]`` (channels-last memory preferred); ``index`` holds, for
    each image, output cell and channel, the flat spatial position of the window's
    maximum, laid out ``[n, H' * W', C]``. One Function for both paths, so that the
    backward writes the full-resolution gradient once: one ``addcmul`` (statistics
    path, ``g_mean/N + 2 g_var (x - mean)/N``) and a scatter-add of the pooled gradient
    into it. It is built from differentiable ops on the saved input and output, so
    second-order gradients flow through it.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = spatial_major(x)
        # Statistics in at least float32, also for bf16 activations under autocast.
        wide = rows.float() if rows.element_size() < 4 else rows
        mean = wide.mean((0, 1), keepdim=True)
        var = (wide - mean).square_().mean((0, 1), keepdim=True)  # two-pass: no cancellation
        pooled = rows.gather(1, index)
        ctx.save_for_backward(x, mean, index)
        ctx.mark_non_differentiable(index)
        return mean, var, pooled

    @staticmethod
    def backward(  # type: ignore[override]
        ctx, g_mean: torch.Tensor | None, g_var: torch.Tensor | None, g_pooled: torch.Tensor | None
    ) -> tuple[torch.Tensor, None]:
        x, mean, index = ctx.saved_tensors
        rows = spatial_major(x)
        count = rows.shape[0] * rows.shape[1]
        if g_mean is None:
            g_mean = torch.zeros_like(mean)
        if g_var is None:
            g_var = torch.zeros_like(mean)
        scale = g_var * (2.0 / count)
        grad = torch.addcmul(g_mean / count - scale * mean, rows, scale)
        if g_pooled is not None:
            grad = grad.scatter_add_(1, index, g_pooled.to(grad.dtype))
        n, c, h, w = x.shape
        return grad.view(n, h, w, c).permute(0, 3, 1, 2).to(x.dtype), None


def spatial_major(x: torch.Tensor) -> torch.Tensor:
    """``[n, C, H, W]`` -> ``[n, H*W, C]`` (a view when ``x`` is channels-last)."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h * w, c)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images in channels-last layout; free for one channel, where ``contiguous`` would
    keep NCHW strides and the convolutions would stay NCHW."""
    n, c, h, w = x.shape
    if c == 1:
        return x.reshape(n, h, w, 1).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last)


def norm_act_pool(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    eps: float,
    record: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """``max_pool2d(leaky_relu(batch_norm(x, gamma, beta)), 2, 2)`` with batch statistics.

    ``x`` is a conv output ``[n, C, H, W]``, best in channels-last layout (the max-pool
    kernel for it is an order of magnitude faster on this CPU than the NCHW one);
    ``gamma``/``beta`` are ``[C]`` or None. When ``record`` is a list, the detached
    (mean, unbiased variance) are appended to it. The result is channels-last.
    """
    n, c = x.shape[:2]
    with torch.no_grad():
        source = x.detach()
        if gamma is not None and not bool((gamma > 0).all()):
            source = source * torch.sign(gamma.detach()).view(1, -1, 1, 1)
        _, index = F.max_pool2d(
            source.contiguous(memory_format=torch.channels_last), 2, 2, return_indices=True
        )
    h2, w2 = index.shape[2:]
    mean, var, pooled = PooledMoments.apply(x, spatial_major(index))
    return normalise_pooled(
        pooled, mean, var, gamma, beta, eps, record, x.numel() // c, (n, h2, w2)
    )


def normalise_pooled(
    pooled: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    eps: float,
    record: list[tuple[torch.Tensor, torch.Tensor]] | None,
    count: int,
    out_shape: tuple[int, int, int],
) -> torch.Tensor:
    """``leaky_relu(gamma * (pooled - mean) / sqrt(var + eps) + beta)`` at pooled
    resolution, as ``[n, C, H', W']`` channels-last.

    ``pooled`` is ``[n, H' * W', C]``; ``mean``/``var`` (biased, over ``count`` values
    per channel) broadcast against it. When ``record`` is a list, the detached (mean,
    unbiased variance) are appended to it.
    """
    invstd = torch.rsqrt(var + eps)
    scale = invstd if gamma is None else invstd * gamma
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    out = F.leaky_relu(torch.addcmul(shift, pooled, scale), NEGATIVE_SLOPE)
    if record is not None:
        with torch.no_grad():
            unbiased = var.detach().flatten() * (count / max(count - 1, 1))
            record.append((mean.detach().flatten(), unbiased))
    n, h2, w2 = out_shape
    return out.view(n, h2, w2, -1).permute(0, 3, 1, 2)


class Conv2d(torch.autograd.Function):
    """``F.conv2d`` (3x3) whose gradient is :class:`_Conv2dGrad`.

    PyTorch's generic double backward of a convolution computes the weight-shaped term
    as a forward convolution with batch and channels swapped, which is slow on a CPU.
    Here the second derivative calls the native input- and weight-gradient kernels.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int,
        padding: int,
        groups: int = 1,
    ) -> torch.Tensor:
        ctx.dtypes = (x.dtype, weight.dtype)
        low = _autocast_dtype(x)
        if low is not None:  # autocast does not reach inside a Function: cast explicitly
            x, weight = x.to(low), weight.to(low)
            bias = None if bias is None else bias.to(low)
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, groups)
        ctx.has_bias = bias is not None
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(x, weight, bias, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        mask = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias)
        gx, gw, gb = _Conv2dGrad.apply(grad_out.to(x.dtype), x, weight, ctx.geometry, mask)
        x_dtype, w_dtype = ctx.dtypes
        gx = None if gx is None else gx.to(x_dtype)
        gw = None if gw is None else gw.to(w_dtype)
        gb = gb.to(w_dtype) if (gb is not None and ctx.needs_input_grad[2]) else None
        return gx, gw, gb, None, None, None


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The lower precision autocast would run a convolution in, or None."""
    if not torch.is_autocast_enabled(x.device.type):
        return None
    return torch.get_autocast_dtype(x.device.type)


def _conv_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    geometry: tuple[int, int, int],
    mask: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, ...]:
    stride, padding, groups = geometry
    return torch.ops.aten.convolution_backward(
        grad_out,
        x,
        weight,
        [weight.shape[0]] if mask[2] else None,
        [stride, stride],
        [padding, padding],
        [1, 1],
        False,
        [0, 0],
        groups,
        list(mask),
    )


class _Conv2dGrad(torch.autograd.Function):
    """(grad_out, x, weight) -> (grad x, grad weight, grad bias) of a convolution.

    Its own backward (the second derivative of the convolution) is bilinear algebra
    on native kernels: ``d/d grad_out = conv(gg_x, W) + conv(x, gg_W) + gg_b``,
    ``d/dW = weight-gradient(input=gg_x, grad_out)`` and ``d/dx =
    input-gradient(weight=gg_W, grad_out)``. Third derivatives are not supported.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        grad_out: torch.Tensor,
        x: torch.Tensor,
        weight: torch.Tensor,
        geometry: tuple[int, int, int],
        mask: tuple[bool, bool, bool],
    ) -> tuple[torch.Tensor | None, ...]:
        ctx.save_for_backward(grad_out, x, weight)
        ctx.geometry = geometry
        with torch.autocast(x.device.type, enabled=False):
            return tuple(_conv_backward(grad_out, x, weight, geometry, mask))

    @staticmethod
    @once_differentiable
    @torch.autocast("cpu", enabled=False)
    def backward(ctx, gg_x, gg_w, gg_b):  # type: ignore[override]
        grad_out, x, weight = ctx.saved_tensors
        stride, padding, groups = ctx.geometry
        gg_x, gg_w, gg_b = (None if g is None else g.to(x.dtype) for g in (gg_x, gg_w, gg_b))
        g_out = g_x = g_w = None
        if ctx.needs_input_grad[0]:
            # The bias term rides along as a conv bias (added inside the kernel).
            if gg_x is not None:
                g_out = F.conv2d(gg_x, weight, gg_b, stride, padding, 1, groups)
                gg_b = None
            if gg_w is not None:
                term = F.conv2d(x, gg_w, gg_b, stride, padding, 1, groups)
                g_out = term if g_out is None else g_out.add_(term)
            elif gg_b is not None:
                g_out = gg_b.view(1, -1, 1, 1).expand_as(grad_out).clone()
        if ctx.needs_input_grad[1] and gg_w is not None:
            g_x = _conv_backward(grad_out, x, gg_w, ctx.geometry, (True, False, False))[0]
        if ctx.needs_input_grad[2] and gg_x is not None:
            g_w = _conv_backward(grad_out, gg_x, weight, ctx.geometry, (False, True, False))[1]
        return g_out, g_x, g_w, None, None


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    padding: int,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d`` with the faster second derivative of :class:`Conv2d`."""
    return Conv2d.apply(x, weight, bias, stride, padding, groups)


__all__ = [
    "NEGATIVE_SLOPE",
    "Conv2d",
    "PooledMoments",
    "conv2d",
    "norm_act_pool",
    "normalise_pooled",
    "spatial_major",
    "to_channels_last",
]
