"""The MAML++ system: LSLR learning, schedule, state round trip, evaluation (the
reference math itself: tests/learner/test_reference.py)."""

from __future__ import annotations

import math

import pytest
import torch

from maml_helpers import random_batch, tiny_config
from metasuite.errors import ConfigError, UserError
from metasuite.learner.reference import eval_plan, task_loss, train_plan
from metasuite.learner.system import MamlSystem, cosine_learning_rate


def test_cosine_schedule_runs_from_meta_to_min_learning_rate():
    cfg = tiny_config(meta_learning_rate=1e-3, min_learning_rate=1e-5, total_epochs=20)
    assert cosine_learning_rate(cfg, 0) == pytest.approx(1e-3)
    assert cosine_learning_rate(cfg, 10) == pytest.approx((1e-3 + 1e-5) / 2)
    assert cosine_learning_rate(cfg, 20) == pytest.approx(1e-5)
    assert cosine_learning_rate(cfg, 5) == pytest.approx(
        1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi / 4)) / 2
    )


def test_initialisation_is_a_function_of_the_train_seed_alone():
    cfg = tiny_config()
    torch.manual_seed(123)
    a = MamlSystem(cfg).state_dict()["params"]
    torch.manual_seed(456)
    b = MamlSystem(cfg).state_dict()["params"]
    c = MamlSystem(tiny_config(train_seed=1)).state_dict()["params"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv0.weight"], c["conv0.weight"])


def test_lslr_rates_are_learned_and_start_at_the_initial_rate():
    cfg = tiny_config(init_inner_loop_learning_rate=0.05)
    system = MamlSystem(cfg, backend="loop")
    assert all(torch.all(r == 0.05) for r in system.rates.values())
    system.train_step(random_batch(cfg), epoch=0)
    # Conv biases feed batch norm, which cancels them: their inner gradient is zero, so
    # their rates cannot learn. Every other adapted tensor's rates must move.
    learnable = {k: r for k, r in system.rates.items() if not k.startswith("conv") or "weight" in k}
    assert len(learnable) == cfg.num_stages + 2
    for name, r in learnable.items():
        assert torch.all(r != 0.05), name
    fixed = MamlSystem(tiny_config(learnable_per_layer_per_step_inner_loop_learning_rate=False))
    fixed.train_step(random_batch(cfg), epoch=0)
    assert all(torch.all(r == 0.1) for r in fixed.rates.values())


def test_state_dict_round_trip_restores_identical_training():
    cfg = tiny_config()
    batch = random_batch(cfg)
    a = MamlSystem(cfg, backend="loop")
    a.train_step(batch, epoch=0)
    saved = a.state_dict()
    b = MamlSystem(tiny_config(train_seed=7), backend="loop")
    b.load_state_dict(saved)
    next_batch = random_batch(cfg, seed=2)
    ma, mb = a.train_step(next_batch, epoch=1), b.train_step(next_batch, epoch=1)
    assert ma == mb
    sa, sb = a.state_dict(), b.state_dict()
    for group in ("params", "rates", "buffers"):
        for k in sa[group]:
            assert torch.equal(sa[group][k], sb[group][k]), (group, k)


def test_load_state_dict_refuses_another_architecture():
    a = MamlSystem(tiny_config())
    b = MamlSystem(tiny_config(cnn_num_filters=4))
    with pytest.raises(UserError, match="params"):
        b.load_state_dict(a.state_dict())


def test_load_state_dict_refuses_other_lslr_learnability_and_changes_nothing():
    # Same tensors and shapes, but fixed rates are not in the optimizer.
    learned = MamlSystem(tiny_config())
    fixed = MamlSystem(tiny_config(learnable_per_layer_per_step_inner_loop_learning_rate=False))
    learned.train_step(random_batch(tiny_config()), epoch=0)
    before = fixed.state_dict()
    with pytest.raises(UserError, match="learnable_per_layer_per_step_inner_loop_learning_rate"):
        fixed.load_state_dict(learned.state_dict())
    after = fixed.state_dict()
    for group in ("params", "rates"):
        for k in before[group]:
            assert torch.equal(before[group][k], after[group][k]), (group, k)


def test_a_resumed_run_uses_the_configs_weight_decay_not_the_checkpoints():
    cfg = tiny_config()
    batch = random_batch(cfg)
    saved = MamlSystem(cfg).state_dict()
    decayed = MamlSystem(tiny_config(weight_decay=0.5), backend="loop")
    decayed.load_state_dict(saved)
    fresh = MamlSystem(tiny_config(weight_decay=0.5), backend="loop")
    fresh.load_state_dict(MamlSystem(tiny_config(weight_decay=0.5)).state_dict())
    decayed.train_step(batch, epoch=0)
    fresh.train_step(batch, epoch=0)
    for k, v in fresh.params.items():
        assert torch.equal(decayed.params[k], v), k


def test_evaluate_leaves_the_learner_untouched_and_returns_probabilities():
    cfg = tiny_config()
    system = MamlSystem(cfg)
    before = system.state_dict()
    result = system.evaluate(random_batch(cfg))
    after = system.state_dict()
    for group in ("params", "rates", "buffers"):
        for k in before[group]:
            assert torch.equal(before[group][k], after[group][k])
    t, nq, n = cfg.batch_size, cfg.num_classes_per_set * cfg.num_target_samples, 3
    assert result.probabilities.shape == (t, nq, n)
    assert torch.allclose(result.probabilities.sum(-1), torch.ones(t, nq))
    assert result.task_accuracy.shape == (t,)
    assert result.accuracy == pytest.approx(float(result.task_accuracy.mean()))


def test_unsupported_reference_switches_are_refused():
    with pytest.raises(ConfigError, match="dropout_rate_value"):
        MamlSystem(tiny_config(dropout_rate_value=0.1))


def test_evaluate_runs_the_evaluation_step_count_and_scores_the_final_step():
    cfg = tiny_config(number_of_evaluation_steps_per_iter=5)  # trained with 3
    plan = eval_plan(cfg)
    assert (plan.num_steps, plan.second_order, plan.differentiable) == (5, False, False)
    assert plan.loss_weights == (0.0, 0.0, 0.0, 0.0, 1.0)
    system = MamlSystem(cfg, backend="loop")
    batch = random_batch(cfg, seed=4)
    result = system.evaluate(batch)
    losses, probs = [], []
    for t in range(len(batch)):
        loss, logits = task_loss(
            system.net,
            system.params,
            system.rates,
            system.inner_names,
            batch.support_x[t],
            batch.support_y[t],
            batch.query_x[t],
            batch.query_y[t],
            plan,
        )
        losses.append(float(loss.detach()))
        probs.append(logits.softmax(-1))
    torch.testing.assert_close(result.probabilities, torch.stack(probs))
    assert result.loss == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    three = MamlSystem(tiny_config(), backend="loop").evaluate(batch)
    assert not torch.allclose(three.probabilities, result.probabilities)


def test_train_step_reports_the_task_mean_and_steps_adam_at_the_cosine_rate():
    cfg = tiny_config()
    epoch = 5
    system = MamlSystem(cfg, backend="loop")
    batch = random_batch(cfg)
    plan = train_plan(cfg, epoch)
    losses = [
        float(
            task_loss(
                system.net,
                system.params,
                system.rates,
                system.inner_names,
                batch.support_x[t],
                batch.support_y[t],
                batch.query_x[t],
                batch.query_y[t],
                plan,
            )[0].detach()
        )
        for t in range(len(batch))
    ]
    before = {k: v.detach().clone() for k, v in system.params.items()}
    metrics = system.train_step(batch, epoch=epoch)
    lr = cosine_learning_rate(cfg, epoch)
    assert metrics["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert metrics["learning_rate"] == lr
    # Adam's first step moves every tensor with a clear gradient by lr per element.
    step = (system.params["linear.weight"] - before["linear.weight"]).abs()
    torch.testing.assert_close(step, torch.full_like(step, lr), rtol=1e-3, atol=0.0)
