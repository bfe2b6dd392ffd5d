"""Reptile's Adam inner optimiser: the shared inner loop with :class:`AdamDirection`
takes exactly torch.optim.Adam's steps (beta1 = 0); only Reptile accepts it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metasuite.config import ExperimentConfig, from_dict, to_dict
from metasuite.errors import ConfigError
from metasuite.learner.reference import adapt, init_rates
from metasuite.learner.reptile import AdamDirection, reptile_plan


class Plain:
    """A module as the inner loop runs it: a function of a parameter dict."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def forward(self, params, x, step, stats=None):
        return functional_call(self.module, params, (x,))


def test_adam_direction_takes_torch_adams_steps() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(9, 6, dtype=torch.float64), torch.arange(3).repeat(3)
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    names = list(params)
    steps, lr = 4, 2.0**-7  # exact in the float32 rate tensors
    adapted: dict = {}
    adapt(
        Plain(module),
        params,
        init_rates(names, steps, lr),
        names,
        x,
        y,
        x,
        y,
        reptile_plan(steps),
        gradient=AdamDirection(),
        adapted=adapted,
    )
    reference = copy.deepcopy(module)
    optimizer = torch.optim.Adam(reference.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-8)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        optimizer.step()
    for name, value in reference.named_parameters():
        torch.testing.assert_close(adapted[name], value.detach(), rtol=1e-9, atol=1e-12)
    # And it is not SGD: the SGD inner loop ends elsewhere.
    sgd: dict = {}
    adapt(
        Plain(module),
        params,
        init_rates(names, steps, lr),
        names,
        x,
        y,
        x,
        y,
        reptile_plan(steps),
        adapted=sgd,
    )
    assert not torch.allclose(sgd[names[0]], adapted[names[0]])


def test_only_reptile_takes_adam_and_the_default_is_not_written() -> None:
    with pytest.raises(ConfigError, match="inner_optimizer is 'adam'"):
        from_dict({"inner_optimizer": "adam"})
    assert "inner_optimizer" in to_dict(ExperimentConfig())
    from metasuite.config import canonical_json

    assert "inner_optimizer" not in canonical_json(ExperimentConfig())
