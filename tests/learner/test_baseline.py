"""Baseline and Baseline++ held to plain references: the per-task head fit against
hand-written SGD with momentum (plain autograd) on the plain network's fixed features,
and the pre-training gradient against plain autograd over split-wide labels."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from maml_helpers import random_batch
from meta_learner_helpers import no_inner_loop_config, plain_features
from metasuite.data.batch import TaskBatch
from metasuite.errors import UserError
from metasuite.learner.baseline import BaselinePlusPlusSystem, BaselineSystem
from metasuite.learner.learners import build_learner

LABELS = 11
"""The training split's label count in these tests."""


def labelled_batch(cfg, seed: int = 1) -> TaskBatch:
    """random_batch with random split-wide labels for every row."""
    batch = random_batch(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    return dataclasses.replace(
        batch,
        support_classes=torch.randint(0, LABELS, batch.support_y.shape, generator=g),
        query_classes=torch.randint(0, LABELS, batch.query_y.shape, generator=g),
    )


def plain_head_logits(features, weight, bias, scale):
    """Linear, or ``scale`` times the cosine of each feature row with each weight row,
    written out with explicit norms."""
    if scale is None:
        return features @ weight.T + bias
    f = features / features.pow(2).sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
    w = weight / weight.pow(2).sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
    return scale * f @ w.T


def plain_fit(features, labels, weight, bias, scale, steps, lr):
    """Full-batch SGD with momentum 0.9 written out: v <- 0.9 v + g (v = g at the first
    step), p <- p - lr v."""
    weight = weight.detach().clone().double().requires_grad_()
    bias = bias.detach().clone().double().requires_grad_()
    velocity = [None, None]
    for _ in range(steps):
        loss = F.cross_entropy(plain_head_logits(features, weight, bias, scale), labels)
        grads = torch.autograd.grad(loss, [weight, bias], allow_unused=True)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip((weight, bias), grads, strict=True)):
                if g is None:
                    continue
                velocity[i] = g.clone() if velocity[i] is None else 0.9 * velocity[i] + g
                p -= lr * velocity[i]
    return weight.detach(), bias.detach()


@pytest.mark.parametrize("learner", ["baseline", "baseline_pp"])
def test_the_head_fit_is_plain_sgd_on_the_frozen_body_features(learner: str) -> None:
    cfg = no_inner_loop_config(learner, finetune_steps=15, finetune_learning_rate=0.5)
    system = build_learner(cfg, num_labels=LABELS)
    assert isinstance(system, BaselineSystem)
    assert isinstance(system, BaselinePlusPlusSystem) == (learner == "baseline_pp")
    batch = labelled_batch(cfg)
    result = system.evaluate(batch)
    params = {k: v.detach().double() for k, v in system.params.items()}
    scale = cfg.cosine_scale if learner == "baseline_pp" else None
    head = system.initial_head
    bias0 = head.get("bias", torch.zeros(cfg.num_classes_per_set))
    expected = []
    for t in range(len(batch)):
        support = plain_features(params, batch.support_x[t].double(), cfg.num_stages)
        query = plain_features(params, batch.query_x[t].double(), cfg.num_stages)
        weight, bias = plain_fit(support, batch.support_y[t], head["weight"], bias0, scale, 15, 0.5)
        expected.append(plain_head_logits(query, weight, bias, scale).softmax(-1))
    torch.testing.assert_close(
        result.probabilities.double(), torch.stack(expected), rtol=1e-3, atol=1e-4
    )
    # The fit learns the support set (15 steps at a high rate on 6 images): a check
    # that the reference itself is not trivially equal to the initial head.
    assert not torch.allclose(
        torch.stack(expected),
        torch.stack(
            [
                plain_head_logits(
                    plain_features(params, batch.query_x[t].double(), cfg.num_stages),
                    head["weight"].double(),
                    bias0.double(),
                    scale,
                ).softmax(-1)
                for t in range(len(batch))
            ]
        ),
        atol=1e-2,
    )
    # Evaluation leaves the learned state alone.
    for k, v in system.params.items():
        assert torch.equal(v.detach().double(), params[k])


def test_a_linear_head_fit_reaches_the_closed_form_separation_on_separable_features() -> None:
    """On one-hot features the fitted linear head's logit gap grows with the steps and
    every support row is classified right (the closed form: weight ~ one-hot rows)."""
    from metasuite.learner.baseline import finetune, head_logits

    features = torch.eye(3).repeat(2, 1).unsqueeze(0)  # [1, 6, 3], class c = feature c
    labels = torch.tensor([[0, 1, 2, 0, 1, 2]])
    head = {"weight": torch.zeros(1, 3, 3), "bias": torch.zeros(1, 3)}
    fitted = finetune(lambda h: head_logits(features, h, None), head, labels, 50, 0.5)
    logits = head_logits(features, fitted, None)[0]
    assert logits.argmax(-1).tolist() == labels[0].tolist()
    # By symmetry the fit keeps weight = a*I + b*(1 - I) and zero bias.
    w = fitted["weight"][0]
    off = w[~torch.eye(3, dtype=torch.bool)]
    assert torch.allclose(torch.diag(w), torch.full((3,), float(w[0, 0])))
    assert torch.allclose(off, torch.full_like(off, float(off[0])))
    assert float(w[0, 0]) > 1 > 0 > float(off[0])
    assert torch.allclose(fitted["bias"], torch.zeros(1, 3), atol=1e-6)


@pytest.mark.parametrize("learner", ["baseline", "baseline_pp"])
def test_pre_training_gradient_is_plain_autograd_over_split_wide_labels(learner: str) -> None:
    cfg = no_inner_loop_config(learner)
    system = build_learner(cfg, num_labels=LABELS)
    assert system.params["classifier.weight"].shape == (LABELS, system.feature_dim)
    assert ("classifier.bias" in system.params) == (learner == "baseline")
    batch = labelled_batch(cfg)
    params = {k: v.detach().double().requires_grad_() for k, v in system.params.items()}
    scale = cfg.cosine_scale if learner == "baseline_pp" else None
    losses = []
    for t in range(len(batch)):
        x = torch.cat([batch.support_x[t], batch.query_x[t]]).double()
        y = torch.cat([batch.support_classes[t], batch.query_classes[t]])
        features = plain_features(params, x, cfg.num_stages)
        logits = plain_head_logits(
            features, params["classifier.weight"], params.get("classifier.bias"), scale
        )
        losses.append(F.cross_entropy(logits, y))
    loss = sum(losses) / len(batch)
    expected = torch.autograd.grad(loss, list(params.values()))
    captured: list[torch.Tensor] = []
    metrics = system.train_step(batch, 0, sync_gradients=lambda g: captured.extend(g))
    assert metrics["loss"] == pytest.approx(float(loss.detach()), rel=1e-4)
    for mine, ref in zip(captured, expected, strict=True):
        torch.testing.assert_close(mine.double(), ref, rtol=1e-3, atol=1e-5)


def test_fine_tuning_the_body_changes_the_result_not_the_learned_state() -> None:
    frozen_cfg = no_inner_loop_config("baseline", finetune_steps=5, finetune_learning_rate=0.1)
    body_cfg = dataclasses.replace(frozen_cfg, finetune_body=True)
    frozen = build_learner(frozen_cfg, num_labels=LABELS)
    tuned = build_learner(body_cfg, num_labels=LABELS)
    batch = labelled_batch(frozen_cfg)
    before = {k: v.detach().clone() for k, v in tuned.params.items()}
    a, b = frozen.evaluate(batch), tuned.evaluate(batch)
    assert not torch.allclose(a.probabilities, b.probabilities, atol=1e-4)
    for k, v in tuned.params.items():
        assert torch.equal(v.detach(), before[k])
    # With no step taken the body cannot matter: both are the initial head's output.
    no_steps = dataclasses.replace(frozen_cfg, finetune_learning_rate=1e-12)
    c = build_learner(no_steps, num_labels=LABELS).evaluate(batch)
    d = build_learner(dataclasses.replace(no_steps, finetune_body=True), num_labels=LABELS)
    torch.testing.assert_close(c.probabilities, d.evaluate(batch).probabilities)


def test_the_classifier_size_comes_from_the_split_and_is_checked_on_load() -> None:
    cfg = no_inner_loop_config("baseline")
    with pytest.raises(ValueError, match="needs num_labels"):
        build_learner(cfg)
    state = build_learner(cfg, num_labels=LABELS).state_dict()
    other = build_learner(cfg, num_labels=LABELS + 1)
    with pytest.raises(UserError, match="params do not match"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="split-wide labels"):
        build_learner(cfg, num_labels=LABELS).train_step(random_batch(cfg), 0)
