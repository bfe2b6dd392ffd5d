"""Reptile against a hand-computed meta-step: theta + eps * mean(theta_tilde - theta)."""

from __future__ import annotations

import pytest
import torch

from maml_helpers import random_batch
from meta_learner_helpers import plain_config, plain_sgd
from metasuite.config import replace
from metasuite.errors import ConfigError
from metasuite.learner.backends import BACKENDS
from metasuite.learner.learners import build_learner
from metasuite.learner.reptile import ReptileSystem
from metasuite.learner.system import cosine_learning_rate

REPTILE = {
    "meta_learner": "reptile",
    "second_order": False,
    "learnable_per_layer_per_step_inner_loop_learning_rate": False,
    "meta_learning_rate": 1.0,
    "min_learning_rate": 0.0,
}


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("epoch", [0, 7])
def test_one_meta_step_is_the_hand_computed_reptile_update(float64, epoch):
    cfg = plain_config(**REPTILE)
    system = build_learner(cfg)
    assert isinstance(system, ReptileSystem)
    theta = {k: v.detach().clone() for k, v in system.params.items()}
    batch = random_batch(cfg, tasks=3)
    names = [n for n in theta if n.startswith(("conv", "linear"))]
    assert sorted(names) == sorted(system.inner_names)
    lr = cfg.init_inner_loop_learning_rate
    tilde = []
    for t in range(len(batch)):
        start = {k: v.clone().requires_grad_() for k, v in theta.items()}
        fast = plain_sgd(
            start,
            names,
            {n: [torch.tensor(lr)] for n in names},
            batch.support_x[t],
            batch.support_y[t],
            cfg.num_stages,
            cfg.number_of_training_steps_per_iter,
            create_graph=False,
        )
        tilde.append({k: v.detach() for k, v in fast.items()})
    eps = cosine_learning_rate(cfg, epoch)
    assert 0 < eps <= 1.0
    system.train_step(batch, epoch)
    for name, value in theta.items():
        mean_move = sum(w[name] - value for w in tilde) / len(tilde)
        expected = value + eps * mean_move
        torch.testing.assert_close(system.params[name].detach(), expected, rtol=1e-10, atol=1e-12)
        moved = not torch.equal(system.params[name].detach(), value)
        assert moved == (name in names), name  # BN gamma/beta are not adapted: not moved


def test_ranks_sum_their_share_like_one_process(float64):
    """Two halves of a meta-batch, their deltas summed (what the all-reduce does), give
    the full batch's step."""
    cfg = plain_config(**REPTILE)
    batch = random_batch(cfg, tasks=4)
    whole = build_learner(cfg)
    whole.train_step(batch, 0)
    parts = [build_learner(cfg) for _ in range(2)]
    shares: list[list[torch.Tensor]] = []
    for rank, learner in enumerate(parts):

        def keep(grads, rank=rank):
            shares.append([g.clone() for g in grads])
            if rank == 1:  # the second rank sees the sum, as after an all-reduce
                for g, a in zip(grads, shares[0], strict=True):
                    g.add_(a)

        learner.train_step(batch.select(range(rank * 2, rank * 2 + 2)), 0, total_tasks=4,
                           sync_gradients=keep)  # fmt: skip
    for name in whole.params:
        torch.testing.assert_close(parts[1].params[name], whole.params[name])


def test_evaluation_adapts_on_the_support_set_with_every_backend(float64):
    cfg = plain_config(**REPTILE)
    batch = random_batch(cfg)
    results = [build_learner(cfg, backend=b).evaluate(batch) for b in BACKENDS]
    for r in results[1:]:
        torch.testing.assert_close(r.probabilities, results[0].probabilities)


def test_no_optimizer_state_and_a_clean_checkpoint_round_trip():
    cfg = plain_config(**REPTILE)
    a = build_learner(cfg)
    a.train_step(random_batch(cfg), 0)
    state = a.state_dict()
    assert state["optimizer"] is None and state["meta_learner"] == "reptile"
    b = build_learner(cfg)
    b.load_state_dict(state)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])
    maml = build_learner(plain_config())
    with pytest.raises(ConfigError, match="meta_learner 'reptile'"):
        maml.load_state_dict(state)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("second_order", "no second-order term"),
        ("learnable_per_layer_per_step_inner_loop_learning_rate", "cannot be learned"),
        ("use_multi_step_loss_optimization", "no per-step query losses"),
    ],
)
def test_meaningless_switches_are_refused(key, why):
    with pytest.raises(ConfigError, match=why) as info:
        replace(plain_config(**REPTILE), **{key: True})
    assert "\n" not in str(info.value)
    assert f'{key} is true but meta_learner is "reptile"' in str(info.value)


def test_deltas_do_not_depend_on_the_number_of_worker_threads():
    """Tasks run in the CPU pool, summed in task order: 1 or 2 workers, same bits."""
    from metasuite.learner.reptile import reptile_deltas, reptile_plan

    cfg = plain_config(**REPTILE)
    system = build_learner(cfg)
    batch = random_batch(cfg, tasks=3)
    plan = reptile_plan(cfg.number_of_training_steps_per_iter)
    runs = [
        reptile_deltas(
            system.net,
            system.params,
            system.rates,
            system.inner_names,
            batch,
            plan,
            [],
            workers=w,
        )
        for w in (1, 2)
    ]
    for name in system.inner_names:
        assert torch.equal(runs[0][0][name], runs[1][0][name]), name
    assert torch.equal(runs[0][2], runs[1][2])
