"""ProtoNet held to hand-written references: the logits on a tiny embedding by loops,
the learner's evaluation and meta-gradient by the plain network of
tests/meta_learner_helpers.py with prototypes computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maml_helpers import random_batch
from meta_learner_helpers import no_inner_loop_config, plain_features
from metasuite.errors import ConfigError
from metasuite.learner.learners import build_learner
from metasuite.learner.protonet import ProtoNetSystem, prototype_logits


def hand_logits(support, support_y, query, ways):
    """Minus squared distances to class means, element by element (float64 loops)."""
    out = torch.empty(len(query), ways, dtype=torch.float64)
    for c in range(ways):
        rows = [i for i in range(len(support)) if int(support_y[i]) == c]
        dims = range(support.shape[1])
        proto = [sum(float(support[i, d]) for i in rows) / len(rows) for d in dims]
        for q in range(len(query)):
            out[q, c] = -sum((float(query[q, d]) - proto[d]) ** 2 for d in range(len(proto)))
    return out


def test_prototype_logits_match_a_hand_written_computation() -> None:
    g = torch.Generator().manual_seed(3)
    support = torch.randn(7, 4, generator=g, dtype=torch.float64)
    support_y = torch.tensor([2, 0, 1, 2, 0, 2, 1])  # 3 ways, uneven shots, shuffled
    query = torch.randn(5, 4, generator=g, dtype=torch.float64)
    mine = prototype_logits(support, support_y, query, 3)
    torch.testing.assert_close(mine, hand_logits(support, support_y, query, 3))
    # One-dimensional sanity check written out: prototypes 1 and 4, query 3.
    one = prototype_logits(
        torch.tensor([[0.0], [2.0], [4.0]]), torch.tensor([0, 0, 1]), torch.tensor([[3.0]]), 2
    )
    assert one.tolist() == [[-4.0, -1.0]]


def plain_task_logits(params, cfg, batch, t):
    dtype = params["conv0.weight"].dtype
    support = plain_features(params, batch.support_x[t].to(dtype), cfg.num_stages).double()
    query = plain_features(params, batch.query_x[t].to(dtype), cfg.num_stages).double()
    return hand_logits_fast(support, batch.support_y[t], query, cfg.num_classes_per_set)


def hand_logits_fast(support, support_y, query, ways):
    """The same computation as hand_logits, with autograd: per-class masks, not one-hot
    matmuls (the learner's way)."""
    protos = torch.stack([support[support_y == c].mean(0) for c in range(ways)])
    return -((query[:, None, :] - protos[None, :, :]) ** 2).sum(-1)


def test_evaluation_is_the_plain_network_with_hand_made_prototypes() -> None:
    cfg = no_inner_loop_config("protonet")
    learner = build_learner(cfg)
    assert isinstance(learner, ProtoNetSystem)
    assert not set(learner.params) & {"linear.weight", "linear.bias"}
    batch = random_batch(cfg)
    result = learner.evaluate(batch)
    params = {k: v.detach() for k, v in learner.params.items()}
    expected = torch.stack(
        [plain_task_logits(params, cfg, batch, t).softmax(-1) for t in range(len(batch))]
    )
    torch.testing.assert_close(result.probabilities.double(), expected, rtol=1e-4, atol=1e-5)
    accuracy = (expected.argmax(-1) == batch.query_y).double().mean()
    assert result.accuracy == pytest.approx(float(accuracy))


def test_the_meta_gradient_is_plain_autograd_of_the_mean_query_loss() -> None:
    cfg = no_inner_loop_config("protonet")
    learner = build_learner(cfg)
    batch = random_batch(cfg)
    params = {k: v.detach().double().requires_grad_() for k, v in learner.params.items()}
    loss = sum(
        F.cross_entropy(plain_task_logits(params, cfg, batch, t), batch.query_y[t])
        for t in range(len(batch))
    ) / len(batch)
    expected = torch.autograd.grad(loss, list(params.values()))
    captured: list[torch.Tensor] = []
    metrics = learner.train_step(batch, 0, sync_gradients=lambda g: captured.extend(g))
    assert metrics["loss"] == pytest.approx(float(loss.detach()), rel=1e-4)
    assert len(captured) == len(expected)
    for mine, ref in zip(captured, expected, strict=True):
        torch.testing.assert_close(mine.double(), ref, rtol=1e-3, atol=1e-5)


def test_training_lowers_the_episodic_loss_and_state_round_trips() -> None:
    cfg = no_inner_loop_config("protonet")
    learner = build_learner(cfg)
    batch = random_batch(cfg)
    first = learner.evaluate(batch).loss
    for epoch in range(8):
        learner.train_step(batch, epoch)
    assert learner.evaluate(batch).loss < first
    state = learner.state_dict()
    assert state["meta_learner"] == "protonet" and "rates" not in state
    fresh = build_learner(cfg)
    fresh.load_state_dict(state)
    torch.testing.assert_close(
        fresh.evaluate(batch).probabilities, learner.evaluate(batch).probabilities, rtol=0, atol=0
    )


def test_a_maml_checkpoint_is_refused_and_inner_loop_backends_are_refused() -> None:
    from maml_helpers import tiny_config

    maml = build_learner(tiny_config())
    learner = build_learner(no_inner_loop_config("protonet"))
    with pytest.raises(ConfigError, match="trained with meta_learner 'maml'"):
        learner.load_state_dict(maml.state_dict())
    with pytest.raises(ConfigError, match='backend is "grouped"'):
        build_learner(no_inner_loop_config("protonet"), backend="grouped")
