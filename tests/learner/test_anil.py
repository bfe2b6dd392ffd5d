"""ANIL against plain autograd: the body is not adapted, the meta-gradient is by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maml_helpers import random_batch
from meta_learner_helpers import plain_config, plain_logits, plain_sgd
from metasuite.config import replace
from metasuite.errors import ConfigError
from metasuite.learner.anil import HEAD_NAMES, AnilSystem
from metasuite.learner.backends import BACKENDS
from metasuite.learner.learners import build_learner
from metasuite.learner.reference import adapt, eval_plan, train_plan


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_inner_loop_adapts_the_head_only():
    cfg = plain_config(meta_learner="anil")
    system = build_learner(cfg)
    assert isinstance(system, AnilSystem)
    assert system.inner_names == HEAD_NAMES
    assert sorted(system.rates) == sorted(HEAD_NAMES)
    batch = random_batch(cfg)
    for plan in (train_plan(cfg, 0), eval_plan(cfg)):
        adapted: dict[str, torch.Tensor] = {}
        adapt(
            system.net,
            system.params,
            system.rates,
            system.inner_names,
            batch.support_x[0],
            batch.support_y[0],
            batch.query_x[0],
            batch.query_y[0],
            plan,
            adapted=adapted,
        )
        for name, value in system.params.items():
            moved = not torch.equal(adapted[name].detach(), value.detach())
            assert moved == (name in HEAD_NAMES), name


@pytest.mark.parametrize("second_order", [False, True])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_meta_gradient_matches_the_hand_computed_one(float64, backend, second_order):
    """Head adapted by S SGD steps with LSLR rates; the body enters the query loss
    directly and through the head's inner gradients (second order) or only directly."""
    cfg = plain_config(meta_learner="anil", second_order=second_order)
    system = build_learner(cfg, backend=backend)
    with torch.no_grad():
        system.rates["linear.weight"].mul_(torch.tensor([1.0, 0.7, 1.3]))
    params = {k: v.detach().clone().requires_grad_() for k, v in system.params.items()}
    rates = {k: v.detach().clone().requires_grad_() for k, v in system.rates.items()}
    batch = random_batch(cfg)
    stages, steps = cfg.num_stages, cfg.number_of_training_steps_per_iter
    total = 0.0
    for t in range(len(batch)):
        fast = plain_sgd(
            params,
            list(HEAD_NAMES),
            {n: list(rates[n].unbind(0)) for n in HEAD_NAMES},
            batch.support_x[t],
            batch.support_y[t],
            stages,
            steps,
            create_graph=second_order,
        )
        for name in params:
            if name not in HEAD_NAMES:
                assert fast[name] is params[name]  # the body is never updated inside
        logits = plain_logits(fast, batch.query_x[t], stages)
        total = total + F.cross_entropy(logits, batch.query_y[t])
    expected = torch.autograd.grad(total / len(batch), [*params.values(), *rates.values()])
    seen = []
    system.train_step(batch, 0, sync_gradients=lambda g: seen.append([x.clone() for x in g]))
    (got,) = seen
    assert len(got) == len(expected)
    for name, a, b in zip([*params, *(f"rate:{k}" for k in rates)], expected, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-11, msg=name)
    # The body does learn, in the outer loop only.
    assert float(got[list(params).index("conv0.weight")].abs().sum()) > 0


def test_bn_parameters_in_the_inner_loop_are_refused():
    with pytest.raises(ConfigError, match="adapts only the classifier"):
        replace(plain_config(), meta_learner="anil", enable_inner_loop_optimizable_bn_params=True)
