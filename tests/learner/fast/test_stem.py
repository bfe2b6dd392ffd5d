"""The first block computed from image patches is the reference block: conv -> batch
norm (batch statistics) -> leaky ReLU -> max-pool, in values, first and second
derivatives, and recorded statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metasuite.learner.fast.ops import NEGATIVE_SLOPE
from metasuite.learner.fast.stem import StemInput, stem_block

EPS = 1e-5


def _reference(x, padding, weight, bias, gamma, beta):
    out = F.conv2d(x, weight, bias, padding=padding)
    out = F.batch_norm(out, None, None, gamma, beta, True, 0.0, EPS)
    return F.max_pool2d(F.leaky_relu(out, NEGATIVE_SLOPE), 2, 2)


def _stem(x, padding, weight, bias, gamma, beta):
    return stem_block(StemInput.from_images(x, padding), weight, bias, gamma, beta, EPS)


def _parameters(c_in, c_out, gamma_kind, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    gamma = beta = None
    if gamma_kind != "none":
        gamma = torch.rand(c_out, generator=g, dtype=dtype) + 0.5
        if gamma_kind.startswith("mixed-sign"):
            gamma[1] = -gamma[1]
        if gamma_kind == "mixed-sign-and-zero":
            gamma[3] = 0.0
        beta = torch.randn(c_out, generator=g, dtype=dtype)
    return [t.requires_grad_() if t is not None else None for t in (weight, bias, gamma, beta)]


def _derivatives(block, x, padding, params):
    """Output, first derivatives and a second-derivative contraction of a block."""
    inputs = [t for t in params if t is not None]
    out = block(x, padding, *params)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    first = torch.autograd.grad((out * weights).square().sum(), inputs, create_graph=True)
    second = torch.autograd.grad(sum((g * g).sum() for g in first), inputs)
    return out, first, second


@pytest.mark.parametrize(("c_in", "size", "padding"), [(1, 8, 1), (3, 9, 0), (1, 7, 1)])
@pytest.mark.parametrize("gamma_kind", ["positive", "mixed-sign-and-zero", "none"])
def test_stem_block_is_the_reference_block(c_in, size, padding, gamma_kind):
    g = torch.Generator().manual_seed(size)
    x = torch.rand(5, c_in, size, size, generator=g, dtype=torch.float64)
    x[:2, :, :5, :5] = 1.0  # a blank region: exact ties inside pooling windows
    params = _parameters(c_in, 5, gamma_kind, seed=size)
    ref = _derivatives(_reference, x, padding, params)
    got = _derivatives(_stem, x, padding, params)
    torch.testing.assert_close(got[0], ref[0])
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(got[1] + got[2], ref[1] + ref[2], strict=True):
        torch.testing.assert_close(a, b)


def test_stem_block_is_twice_differentiable():
    """Against finite differences; a zero gamma is a kink (pooling flips from max to
    min as gamma changes sign), so the gammas here are nonzero."""
    x = torch.rand(3, 2, 6, 6, dtype=torch.float64)
    params = _parameters(2, 4, "mixed-sign", seed=1)
    inputs = StemInput.from_images(x, 1)
    fn = lambda *p: stem_block(inputs, *p, EPS)  # noqa: E731
    assert torch.autograd.gradcheck(fn, params)
    assert torch.autograd.gradgradcheck(fn, params)


def test_stem_block_records_the_conv_output_statistics():
    x = torch.rand(4, 3, 10, 10)
    weight, bias, gamma, beta = (
        t.detach() for t in _parameters(3, 6, "positive", 2, torch.float32)
    )
    record = []
    stem_block(StemInput.from_images(x, 1), weight, bias, gamma, beta, EPS, record)
    ((mean, var),) = record
    conv = F.conv2d(x, weight, bias, padding=1)
    torch.testing.assert_close(mean, conv.mean((0, 2, 3)))
    torch.testing.assert_close(var, conv.var((0, 2, 3), correction=1))


def test_stem_block_stays_float32_under_bf16_autocast():
    x = torch.rand(4, 1, 8, 8)
    weight, bias, gamma, beta = _parameters(1, 5, "positive", 3, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _stem(x, 1, weight, bias, gamma, beta)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _reference(x, 1, weight, bias, gamma, beta))
    (grad,) = torch.autograd.grad(out.square().sum(), weight)
    assert grad.dtype == torch.float32
