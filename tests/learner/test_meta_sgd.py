"""Meta-SGD against plain autograd: per-element rates, and all-equal rates = MAML."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maml_helpers import random_batch
from meta_learner_helpers import plain_config, plain_logits, plain_sgd
from metasuite.errors import ConfigError
from metasuite.learner.backends import BACKENDS
from metasuite.learner.learners import build_learner
from metasuite.learner.meta_sgd import MetaSgdSystem
from metasuite.learner.system import MamlSystem


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _grads_of_step(system, batch, epoch=0):
    seen = []
    system.train_step(batch, epoch, sync_gradients=lambda g: seen.append([t.clone() for t in g]))
    (grads,) = seen
    return grads


def test_rates_have_the_shape_of_each_adapted_tensor_per_step():
    cfg = plain_config(meta_learner="meta_sgd")
    system = build_learner(cfg)
    assert isinstance(system, MetaSgdSystem)
    steps = cfg.number_of_training_steps_per_iter
    for name in system.inner_names:
        assert system.rates[name].shape == (steps, *system.params[name].shape)
        assert torch.all(system.rates[name] == cfg.init_inner_loop_learning_rate)
        assert system.rates[name].requires_grad
    shared = build_learner(
        plain_config(
            meta_learner="meta_sgd", learnable_per_layer_per_step_inner_loop_learning_rate=False
        )
    )
    assert shared.rates["conv0.weight"].shape == (1, *shared.params["conv0.weight"].shape)
    assert shared.rates["conv0.weight"].requires_grad  # Meta-SGD always learns its rates


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_all_rates_equal_gives_mamls_meta_gradient(float64, backend):
    """Meta-SGD starting from one rate everywhere computes MAML (LSLR) exactly: the same
    meta-gradient of the network, and each rate tensor's gradient sums to MAML's."""
    cfg = plain_config(second_order=True)
    maml = MamlSystem(cfg, backend="loop")
    meta_sgd = build_learner(
        plain_config(second_order=True, meta_learner="meta_sgd"), backend=backend
    )
    batch = random_batch(cfg)
    g_maml = _grads_of_step(maml, batch)
    g_sgd = _grads_of_step(meta_sgd, batch)
    n = len(maml.params)
    for name, a, b in zip(maml.params, g_maml[:n], g_sgd[:n], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12, msg=name)
    for name, a, b in zip(maml.rates, g_maml[n:], g_sgd[n:], strict=True):
        assert b.shape == (cfg.number_of_training_steps_per_iter, *maml.params[name].shape)
        torch.testing.assert_close(b.flatten(1).sum(1), a, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("second_order", [False, True])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_meta_gradient_of_distinct_rates_matches_plain_autograd(float64, backend, second_order):
    cfg = plain_config(meta_learner="meta_sgd", second_order=second_order)
    system = build_learner(cfg, backend=backend)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for rate in system.rates.values():  # every element its own rate
            rate.mul_(0.5 + torch.rand(rate.shape, generator=g))
    params = {k: v.detach().clone().requires_grad_() for k, v in system.params.items()}
    rates = {k: v.detach().clone().requires_grad_() for k, v in system.rates.items()}
    batch = random_batch(cfg)
    names = list(system.inner_names)
    steps, stages = cfg.number_of_training_steps_per_iter, cfg.num_stages
    total = 0.0
    for t in range(len(batch)):
        fast = plain_sgd(
            params,
            names,
            {n: list(rates[n].unbind(0)) for n in names},
            batch.support_x[t],
            batch.support_y[t],
            stages,
            steps,
            create_graph=second_order,  # first order: the inner gradients are constants
        )
        total = total + F.cross_entropy(
            plain_logits(fast, batch.query_x[t], stages), batch.query_y[t]
        )
    expected = torch.autograd.grad(total / len(batch), [*params.values(), *rates.values()])
    got = _grads_of_step(system, batch)
    for name, a, b in zip([*params, *(f"rate:{k}" for k in rates)], expected, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-11, msg=name)


def test_checkpoint_carries_the_rates_and_refuses_a_maml_checkpoint():
    cfg = plain_config(meta_learner="meta_sgd")
    a = build_learner(cfg)
    a.train_step(random_batch(cfg), 0)
    b = build_learner(cfg)
    b.load_state_dict(a.state_dict())
    for name in a.rates:
        torch.testing.assert_close(b.rates[name], a.rates[name], rtol=0, atol=0)
    assert not torch.equal(a.rates["conv0.weight"][0], a.rates["conv0.weight"][1])
    maml_state = MamlSystem(plain_config()).state_dict()
    with pytest.raises(ConfigError, match=r"meta_learner 'maml'.*'meta_sgd'"):
        b.load_state_dict(maml_state)
    legacy = {k: v for k, v in maml_state.items() if k != "meta_learner"}  # before issue 14
    with pytest.raises(ConfigError, match="meta_learner 'maml'"):
        b.load_state_dict(legacy)
    MamlSystem(plain_config()).load_state_dict(legacy)  # still MAML's
