"""The functional backbone and the fused CPU block: shapes, init, running stats, and
that norm_act_pool is the reference block (values, gradients, second derivatives)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from maml_helpers import tiny_config
from metasuite.errors import ConfigError
from metasuite.learner.fast.ops import NEGATIVE_SLOPE, PooledMoments, conv2d, norm_act_pool
from metasuite.learner.models import Backbone


def _reference_block(x, gamma, beta, eps=1e-5):
    out = F.batch_norm(x, None, None, gamma, beta, True, 0.0, eps)
    return F.max_pool2d(F.leaky_relu(out, NEGATIVE_SLOPE), 2, 2)


def _derivatives(block, x, gamma, beta):
    """Output, first derivatives and a second-derivative contraction of a block."""
    inputs = [x] + [t for t in (gamma, beta) if t is not None]
    out = block(x, gamma, beta)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    first = torch.autograd.grad((out * weights).square().sum(), inputs, create_graph=True)
    second = torch.autograd.grad(sum((g * g).sum() for g in first), inputs)
    return out, first, second


@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("gamma_kind", ["positive", "mixed-sign-and-zero", "none"])
def test_norm_act_pool_is_the_reference_block(size, gamma_kind):
    g = torch.Generator().manual_seed(size)
    x = torch.randn(6, 5, size, size, generator=g, dtype=torch.float64)
    x[:2, :, :4, :4] = 0.25  # exact ties inside pooling windows, as on blank image regions
    x.requires_grad_()
    gamma = beta = None
    if gamma_kind != "none":
        gamma = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
        if gamma_kind == "mixed-sign-and-zero":
            gamma[1] = -gamma[1]
            gamma[3] = 0.0
        gamma.requires_grad_()
        beta = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_()
    ref = _derivatives(_reference_block, x, gamma, beta)
    got = _derivatives(lambda *a: norm_act_pool(*a, 1e-5), x, gamma, beta)
    torch.testing.assert_close(got[0], ref[0])
    for a, b in zip(got[1] + got[2], ref[1] + ref[2], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_pooled_moments_are_batch_statistics_and_twice_differentiable(layout):
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64) + 10
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    _, index = F.max_pool2d(x.detach(), 2, 2, return_indices=True)
    rows = index.permute(0, 2, 3, 1).reshape(3, 4, 2)
    mean, var, pooled = PooledMoments.apply(x, rows)
    torch.testing.assert_close(mean.flatten(), x.mean((0, 2, 3)))
    torch.testing.assert_close(var.flatten(), x.var((0, 2, 3), correction=0))
    torch.testing.assert_close(pooled.view(3, 2, 2, 2).permute(0, 3, 1, 2), F.max_pool2d(x, 2, 2))
    fn = lambda t: PooledMoments.apply(t, rows)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_norm_act_pool_records_unbiased_statistics():
    x = torch.randn(4, 3, 6, 6)
    record = []
    norm_act_pool(x, None, None, 1e-5, record)
    ((mean, var),) = record
    torch.testing.assert_close(mean, x.mean((0, 2, 3)))
    torch.testing.assert_close(var, x.var((0, 2, 3), correction=1))


def test_backbone_shapes_follow_the_config():
    net = Backbone.from_config(tiny_config())  # 12x12, 3 stages of max-pooling
    params = net.init_params(torch.Generator().manual_seed(0))
    assert net.layer_shapes() == [(12, 12), (6, 6), (3, 3)]
    assert params["linear.weight"].shape == (3, 6 * 1 * 1)
    assert params["norm0.weight"].shape == (3, 6)  # per step (BNWB) with per-step stats
    assert net.init_buffers()["norm2.running_var"].shape == (3, 6)
    x = torch.rand(4, 1, 12, 12)
    assert net.forward(params, x, step=2).shape == (4, 3)

    strided = Backbone.from_config(tiny_config(max_pooling=False, cnn_blocks_per_stage=2))
    assert [strided.stride(i) for i in range(6)] == [1, 2, 1, 2, 1, 2]
    assert strided.feature_size() == 6  # global average pool

    shared = Backbone.from_config(tiny_config(enable_inner_loop_optimizable_bn_params=True))
    assert shared.init_params(torch.Generator())["norm1.bias"].shape == (6,)
    plain = Backbone.from_config(
        tiny_config(per_step_bn_statistics=False, learnable_bn_gamma=False)
    )
    plain_params = plain.init_params(torch.Generator())
    assert "norm0.weight" not in plain_params and plain_params["norm0.bias"].shape == (6,)
    assert plain.init_buffers() == {}
    layer = Backbone.from_config(tiny_config(norm_layer="layer_norm", per_step_bn_statistics=False))
    assert layer.init_params(torch.Generator())["norm1.weight"].shape == (6, 6, 6)


def test_standard_omniglot_and_imagenet_backbones():
    omniglot = Backbone.from_config(
        tiny_config(cnn_num_filters=64, num_stages=4, image_height=28, image_width=28)
    )
    assert omniglot.feature_size() == 64
    imagenet = Backbone.from_config(
        tiny_config(
            cnn_num_filters=48, num_stages=4, image_height=84, image_width=84, image_channels=3
        )
    )
    assert imagenet.feature_size() == 48 * 5 * 5


def test_a_network_that_does_not_fit_the_image_is_a_config_error():
    with pytest.raises(ConfigError, match="num_stages"):
        Backbone.from_config(tiny_config(conv_padding=False, num_stages=2, cnn_blocks_per_stage=3))


def test_evaluation_steps_beyond_training_steps_reuse_the_last_row():
    net = Backbone.from_config(tiny_config(number_of_training_steps_per_iter=2))
    assert [net.norm_step(s) for s in range(4)] == [0, 1, 1, 1]


def test_running_stats_follow_the_reference_momentum_updates():
    """Folding recorded statistics reproduces F.batch_norm's in-place running updates."""
    net = Backbone.from_config(tiny_config(num_stages=1))
    params = net.init_params(torch.Generator().manual_seed(0))
    buffers = net.init_buffers()
    expected_mean = buffers["norm0.running_mean"].clone()
    expected_var = buffers["norm0.running_var"].clone()
    records, g = [], torch.Generator().manual_seed(1)
    for _task in range(2):
        stats = []
        for step in (0, 1, 1):
            x = torch.rand(5, 1, 12, 12, generator=g)
            net.forward(params, x, step, stats)
            conv = F.conv2d(x, params["conv0.weight"], params["conv0.bias"], padding=1)
            F.batch_norm(conv, expected_mean[step], expected_var[step], training=True, momentum=0.1)
        records.append(stats)
    net.update_running_stats(buffers, records)
    torch.testing.assert_close(buffers["norm0.running_mean"], expected_mean)
    torch.testing.assert_close(buffers["norm0.running_var"], expected_var)
    assert not torch.equal(expected_mean[2], expected_mean[0])  # row 2 never used: untouched
    assert torch.all(expected_mean[2] == 0)


def test_initialisation_uses_its_generator_only():
    net = Backbone.from_config(tiny_config())
    torch.manual_seed(0)
    a = net.init_params(torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    b = net.init_params(torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a)
    bound = (6 / (9 * 6 + 9 * 6)) ** 0.5  # Xavier-uniform, conv1: fan_in = fan_out = 6*9
    assert a["conv1.weight"].abs().max() <= bound
    assert torch.all(a["conv1.bias"] == 0) and torch.all(a["norm1.weight"] == 1)


@pytest.mark.parametrize(
    ("stride", "padding", "image_input"), [(1, 1, False), (2, 1, False), (1, 0, True)]
)
def test_fast_conv2d_first_and_second_derivatives(stride, padding, image_input):
    g = torch.Generator().manual_seed(stride + padding)
    x = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=not image_input)
    w = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    inputs = (w, b) if image_input else (x, w, b)

    def fn(*args):
        xx, ww, bb = (x, *args) if image_input else args
        return conv2d(xx, ww, bb, stride, padding)

    torch.testing.assert_close(fn(*inputs), F.conv2d(x, w, b, stride, padding))
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_fast_conv2d_follows_bf16_autocast():
    x = torch.rand(2, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv2d(x, w, None, 1, 1)
        ref = F.conv2d(x, w, None, 1, 1)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref)
    (grad,) = torch.autograd.grad(out.float().square().sum(), w)
    assert grad.dtype == torch.float32


def test_the_reference_network_and_math_do_not_load_the_fast_path():
    """models.py and reference.py read on their own: importing them loads no
    metasuite.learner.fast module (the fast network imports them, not the other way)."""
    code = (
        "import sys, metasuite.learner.models, metasuite.learner.reference\n"
        "print([m for m in sys.modules if m.startswith('metasuite.learner.fast')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("max_pooling", [True, False])
def test_features_are_everything_before_the_classifier(max_pooling):
    """forward = features then the linear head, exactly; the head is not read."""
    net = Backbone.from_config(tiny_config(max_pooling=max_pooling))
    params = net.init_params(torch.Generator().manual_seed(0))
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    features = net.features(params, x, 1)
    assert features.shape == (6, net.feature_size())
    logits = F.linear(features, params["linear.weight"], params["linear.bias"])
    assert torch.equal(net.forward(params, x, 1), logits)
    assert net.head_names == ("linear.weight", "linear.bias")
    body = {k: v for k, v in params.items() if k not in net.head_names}
    assert torch.equal(net.features(body, x, 1), features)
    # Statistics are recorded by features as by forward.
    a: list = []
    b: list = []
    net.features(params, x, 1, a)
    net.forward(params, x, 1, b)
    assert len(a) == len(b) == 1 and a[0][0] == b[0][0]
