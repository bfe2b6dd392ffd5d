"""The backbone seam: any nn.Module meta-learned with the MAML++ math of the reference.

The generic path (``ModuleBackbone``: ``functional_call`` with per-step batch-norm
state swapped in by name) is held to the reference path (the conv network written as
functions) on the reference network written as a plain ``nn.Module``
(:func:`backbone_helpers.reference_conv`, same parameter names): equal loss, logits,
meta-gradient and running statistics in float64 for MAML++'s switches, first and
second order; every meta-learner's step equal on both paths (each learner's own tests
hold the reference path to a plain-autograd reference). A finite-difference check holds
the second-order meta-gradient through a tiny module with batch norm.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maml_helpers import random_batch, tiny_config
from metasuite.errors import ConfigError
from metasuite.learner.backbones import ModuleBackbone, build_backbone
from metasuite.learner.backbones.resnet12 import ResNet12
from metasuite.learner.learners import build_learner
from metasuite.learner.reference import (
    StepPlan,
    adapt,
    inner_parameter_names,
    meta_loss_loop,
    train_plan,
)

CONV = "backbone_helpers:reference_conv"


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def both_paths(**changes):
    """(reference system, generic system) of one tiny config, the generic one holding
    the reference one's initial parameters and rates."""
    cfg = tiny_config(**changes)
    ref = build_learner(cfg, backend="loop")
    gen = build_learner(tiny_config(backbone=CONV, **changes))
    assert isinstance(gen.net, ModuleBackbone)
    assert set(gen.params) == set(ref.params)
    with torch.no_grad():
        for k, v in ref.params.items():
            gen.params[k].copy_(v)
    return ref, gen


SWITCHES = {
    "maml++": {},
    "maml": {
        "use_multi_step_loss_optimization": False,
        "learnable_per_layer_per_step_inner_loop_learning_rate": False,
        "per_step_bn_statistics": False,
    },
    "inner bn": {"enable_inner_loop_optimizable_bn_params": True},
    "da": {"first_order_to_second_order_epoch": 3},
}


@pytest.mark.parametrize("switches", SWITCHES.values(), ids=SWITCHES.keys())
@pytest.mark.parametrize("order", ["second", "first"])
def test_generic_path_gives_the_reference_loss_and_meta_gradient(float64, switches, order):
    ref, gen = both_paths(second_order=order == "second", **switches)
    assert inner_parameter_names(gen.net, gen.cfg) == tuple(
        n for n in gen.net.parameter_names() if n in set(ref.inner_names)
    )
    batch = random_batch(ref.cfg)
    batch = type(batch)(
        batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y,
        batch.task_ids,
    )  # fmt: skip
    for epoch in (0, 4):
        plan = train_plan(ref.cfg, epoch)
        out = {}
        for name, system in (("ref", ref), ("gen", gen)):
            params = {k: v.detach().double().requires_grad_() for k, v in ref.params.items()}
            rates = {k: v.detach().double().requires_grad_() for k, v in ref.rates.items()}
            records: list = []
            with system.net.mode(training=True):
                loss, logits = meta_loss_loop(
                    system.net, params, rates, ref.inner_names, batch, plan, records
                )
            wrt = [*params.values(), *rates.values()]
            grads = torch.autograd.grad(loss, wrt, allow_unused=True, materialize_grads=True)
            out[name] = (loss, logits, grads, records)
        (l0, z0, g0, r0), (l1, z1, g1, r1) = out["ref"], out["gen"]
        torch.testing.assert_close(l1, l0, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(z1, z0, rtol=1e-10, atol=1e-10)
        for a, b in zip(g1, g0, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)
        assert len(r0) == len(r1)
        for task0, task1 in zip(r0, r1, strict=True):
            for (row0, layers0), (row1, layers1) in zip(task0, task1, strict=True):
                assert row0 == row1
                for (m0, v0), (m1, v1) in zip(layers0, layers1, strict=True):
                    torch.testing.assert_close(m1, m0, rtol=1e-10, atol=1e-12)
                    # the reference keeps its variance record in float32
                    torch.testing.assert_close(v1.to(v0.dtype), v0, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("learner", ["maml", "meta_sgd", "anil", "reptile"])
def test_every_meta_learner_steps_alike_on_both_paths(learner):
    """Two meta-steps and an evaluation: parameters, rates, running statistics and
    evaluation probabilities agree (float32, same operations in the same order)."""
    changes: dict = {"meta_learner": learner}
    if learner == "reptile":
        changes |= {
            "second_order": False,
            "use_multi_step_loss_optimization": False,
            "learnable_per_layer_per_step_inner_loop_learning_rate": False,
        }
    ref, gen = both_paths(**changes)
    assert gen.inner_names == tuple(n for n in gen.net.parameter_names() if n in ref.inner_names)
    for it in range(2):
        batch = random_batch(ref.cfg, seed=it + 1)
        a = ref.train_step(batch, 0)
        b = gen.train_step(batch, 0)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    for group in ("params", "rates", "buffers"):
        mine, theirs = getattr(gen, group), getattr(ref, group)
        assert set(mine) == set(theirs)
        for k in theirs:
            torch.testing.assert_close(mine[k], theirs[k], rtol=1e-4, atol=1e-5)
    batch = random_batch(ref.cfg, seed=9)
    torch.testing.assert_close(
        gen.evaluate(batch).probabilities, ref.evaluate(batch).probabilities, rtol=1e-4, atol=1e-5
    )


class TinyBnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.linear = nn.Linear(3 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.tanh(self.norm(self.conv(x))), 2)
        return self.linear(x.flatten(1))


def test_second_order_meta_gradient_matches_finite_differences(float64):
    """The meta-gradient through a module with batch norm, per-step BN weights and
    LSLR, second order, against central differences of the meta-loss."""
    torch.manual_seed(0)
    net = ModuleBackbone(
        TinyBnNet().double(), "tiny", {}, "linear", 2, True, True, False, False, seed=0
    )
    g = torch.Generator().manual_seed(3)
    params = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in net.init_params().items()}
    inner = net.adaptable_parameter_names(include_norm=False)
    rates = {n: torch.tensor([0.3, 0.2]) for n in inner}
    sx, qx = torch.rand(6, 1, 4, 4, generator=g), torch.rand(6, 1, 4, 4, generator=g)
    sy, qy = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 1, 0, 0, 1, 2])
    plan = StepPlan(2, True, (0.3, 0.7))

    def meta_loss(p: dict, r: dict) -> torch.Tensor:
        p = {k: v.detach().requires_grad_() for k, v in p.items()}  # the inner loop's grads
        return adapt(net, p, r, inner, sx, sy, qx, qy, plan)[0]

    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    rate_leaves = {k: v.clone().requires_grad_() for k, v in rates.items()}
    loss = adapt(net, leaves, rate_leaves, inner, sx, sy, qx, qy, plan)[0]
    grads = torch.autograd.grad(loss, [*leaves.values(), *rate_leaves.values()])
    analytic = dict(zip([*leaves, *(f"rate:{k}" for k in rate_leaves)], grads, strict=True))
    directions = torch.Generator().manual_seed(5)
    h = 1e-5
    for _ in range(4):
        d = {k: torch.randn(v.shape, generator=directions) for k, v in params.items()}
        dr = {k: torch.randn(v.shape, generator=directions) for k, v in rates.items()}
        plus = meta_loss(
            {k: v + h * d[k] for k, v in params.items()},
            {k: v + h * dr[k] for k, v in rates.items()},
        )
        minus = meta_loss(
            {k: v - h * d[k] for k, v in params.items()},
            {k: v - h * dr[k] for k, v in rates.items()},
        )
        numeric = (plus - minus) / (2 * h)
        predicted = sum((analytic[k] * d[k]).sum() for k in params) + sum(
            (analytic[f"rate:{k}"] * dr[k]).sum() for k in rates
        )
        assert float(predicted.detach()) == pytest.approx(
            float(numeric.detach()), rel=1e-6, abs=1e-9
        )
    # The second-order term is really there: first order gives another gradient.
    first = StepPlan(2, False, (0.3, 0.7))
    fo = adapt(net, leaves, rate_leaves, inner, sx, sy, qx, qy, first)[0]
    fo_grads = torch.autograd.grad(fo, list(leaves.values()))
    assert any(not torch.allclose(a, b) for a, b in zip(fo_grads, grads, strict=False))


def test_activation_checkpointing_gives_the_same_meta_gradient(float64):
    plain = build_backbone(tiny_config(backbone=CONV))
    ckpt = build_backbone(tiny_config(backbone=CONV, activation_checkpointing=True))
    cfg = tiny_config()
    batch = random_batch(cfg)
    batch = type(batch)(
        batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y,
        batch.task_ids,
    )  # fmt: skip
    out = []
    for net in (plain, ckpt):
        params = {k: v.double().requires_grad_() for k, v in plain.init_params().items()}
        names = inner_parameter_names(net, cfg)
        rates = {n: torch.full((3,), 0.1) for n in names}
        loss, _ = meta_loss_loop(net, params, rates, names, batch, train_plan(cfg, 0), [])
        out.append(torch.autograd.grad(loss, list(params.values())))
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_state_dict_of_the_module_still_loads_and_becomes_the_initialisation():
    """Nothing is rewritten: the module keeps its own layers and state_dict keys, and
    per-step BN weights start as the module's own (broadcast over the steps)."""
    net = build_backbone(tiny_config(backbone=CONV))
    module = net.module
    keys = set(module.state_dict())
    assert "norm0.running_mean" in keys and "norm0.weight" in keys
    pretrained = {
        k: torch.full_like(v, 0.5) if v.is_floating_point() else v
        for k, v in module.state_dict().items()
    }
    module.load_state_dict(pretrained)
    params, buffers = net.init_params(), net.init_buffers()
    assert params["norm0.weight"].shape == (3, 6)  # [steps, channels] under BNWB
    assert torch.equal(params["norm0.weight"], torch.full((3, 6), 0.5))
    assert torch.equal(buffers["norm0.running_var"], torch.full((3, 6), 0.5))


def test_dropout_masks_are_a_function_of_the_task_not_of_what_ran_before():
    cfg = tiny_config(backbone="backbone_helpers:tiny_net", backbone_kwargs={"dropout": 0.5})
    net = build_backbone(cfg)
    params = net.init_params()
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(0))

    def logits(task: int) -> torch.Tensor:
        with net.mode(training=True), net.task_randomness(task):
            return net.forward(params, x, 0)

    first = logits(7)
    torch.rand(100)  # the global generator moves on
    assert torch.equal(logits(7), first)
    assert not torch.equal(logits(8), first)
    with net.mode(training=False):
        assert torch.equal(net.forward(params, x, 0), net.forward(params, x, 0))


@pytest.mark.parametrize("size", [28, 84])
def test_resnet12_works_at_omniglot_and_mini_imagenet_sizes(size):
    # at 84x84 one task of one inner step: the shapes are what this checks
    small = {"batch_size": 1, "number_of_training_steps_per_iter": 1} if size == 84 else {}
    cfg = tiny_config(
        backbone="resnet12",
        backbone_kwargs={"widths": [4, 4, 8, 8], "dropblock_rate": 0.1},
        image_height=size,
        image_width=size,
        image_channels=3 if size == 84 else 1,
        number_of_evaluation_steps_per_iter=1,
        **small,
    )
    steps = cfg.number_of_training_steps_per_iter
    system = build_learner(cfg)
    assert isinstance(system.net.module, ResNet12)
    assert system.backend == "loop"
    assert system.net.head == "classifier"
    # 4 blocks x 4 batch norms, per-step running statistics for each
    assert len(system.net.bn_layers) == 16
    assert system.buffers["blocks.0.bn1.running_mean"].shape == (steps, 4)
    before = {k: v.clone() for k, v in system.params.items()}
    metrics = system.train_step(random_batch(cfg), 0)
    assert metrics["loss"] > 0
    assert any(not torch.equal(before[k], system.params[k]) for k in before)
    probabilities = system.evaluate(random_batch(cfg, seed=4)).probabilities
    assert probabilities.shape == (cfg.batch_size, 6, 3)


def test_the_same_seed_builds_the_same_network_and_another_seed_another():
    def built(seed: int) -> ModuleBackbone:
        cfg = tiny_config(
            backbone="resnet12",
            backbone_kwargs={"widths": [2, 2, 2, 2]},
            image_height=28,
            image_width=28,
            train_seed=seed,
        )
        return build_backbone(cfg)

    a, b, c = built(0), built(0), built(1)
    pa, pb, pc = a.init_params(), b.init_params(), c.init_params()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)


def test_inner_loop_parameters_select_by_pattern_and_anil_finds_the_head():
    cfg = tiny_config(
        backbone="backbone_helpers:tiny_net", inner_loop_parameters=["head.*", "features.0.weight"]
    )
    system = build_learner(cfg)
    assert system.inner_names == ("features.0.weight", "head.weight", "head.bias")
    anil = build_learner(tiny_config(backbone="backbone_helpers:tiny_net", meta_learner="anil"))
    assert anil.inner_names == ("head.weight", "head.bias")
    named = build_learner(
        tiny_config(backbone="backbone_helpers:tiny_net", meta_learner="anil", head="features.0")
    )
    assert named.inner_names == ("features.0.weight", "features.0.bias")


def test_a_checkpoint_of_another_backbone_is_refused():
    a = build_learner(tiny_config(backbone="backbone_helpers:tiny_net"))
    b = build_learner(
        tiny_config(backbone="backbone_helpers:tiny_net", backbone_kwargs={"width": 4})
    )
    conv = build_learner(tiny_config())
    with pytest.raises(ConfigError, match="backbone"):
        b.load_state_dict(a.state_dict())
    with pytest.raises(ConfigError, match="backbone 'conv'"):
        a.load_state_dict(conv.state_dict())
    assert "backbone" not in conv.state_dict()  # the reference network's checkpoints as before
    a.load_state_dict(a.state_dict())


BAD = {
    "unknown name": ({"backbone": "resnet"}, "did you mean 'resnet12'"),
    "no module": ({"backbone": "no_such_module:factory"}, "cannot import 'no_such_module'"),
    "no callable": ({"backbone": "backbone_helpers:missing"}, "has no callable 'missing'"),
    "raises": ({"backbone": "backbone_helpers:raises"}, "raised RuntimeError: no GPU here"),
    "bad kwargs": (
        {"backbone": "backbone_helpers:tiny_net", "backbone_kwargs": {"depth": 3}},
        "backbone_kwargs",
    ),
    "not a module": ({"backbone": "backbone_helpers:not_a_module"}, "expected a torch.nn.Module"),
    "wrong logits": (
        {"backbone": "backbone_helpers:wrong_logits"},
        r"logits \[3, 3\].*got \[3, 4\]",
    ),
    "pattern": (
        {"backbone": "backbone_helpers:tiny_net", "inner_loop_parameters": ["fc.*"]},
        "inner_loop_parameters: 'fc.*' matches no parameter",
    ),
    "in place": ({"backbone": "backbone_helpers:in_place"}, "breaks its gradient"),
    "in place buffer": ({"backbone": "backbone_helpers:in_place_buffer"}, "breaks its gradient"),
    "second order": (
        {"backbone": "backbone_helpers:distance_head"},
        "cannot be differentiated twice.*second_order: false",
    ),
    "head": ({"backbone": "backbone_helpers:tiny_net", "head": "fc"}, "no submodule 'fc'"),
    "widths": ({"backbone": "resnet12", "backbone_kwargs": {"widths": [4, 4]}}, "four integers"),
    "huge widths": (
        {"backbone": "resnet12", "backbone_kwargs": {"widths": [4, 4, 4, 10**9]}},
        r"widths must be four integers in \[1, 8192\]",
    ),
    "conv kwargs": ({"backbone_kwargs": {"widths": [4]}}, "leave backbone_kwargs empty"),
    "vmap": ({"backbone": "backbone_helpers:tiny_net", "backend": "vmap"}, "conv"),
}


@pytest.mark.parametrize("changes, message", BAD.values(), ids=BAD.keys())
def test_bad_backbones_are_one_line_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_learner(tiny_config(**changes))
    assert "\n" not in str(err.value)


def test_first_order_accepts_a_module_that_breaks_only_second_order():
    cfg = tiny_config(backbone="backbone_helpers:distance_head", second_order=False)
    system = build_learner(cfg)
    before = {k: v.clone() for k, v in system.params.items()}
    system.train_step(random_batch(cfg), 0)
    assert not torch.equal(before["embed.weight"], system.params["embed.weight"])
