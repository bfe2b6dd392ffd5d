"""An independent network for the meta-learner reference tests: plain autograd.

:func:`plain_logits` is the paper's conv network written out with ``torch.nn.functional``
and none of metasuite's learner code (conv 3x3 -> batch norm on the batch's statistics
-> leaky ReLU(0.01) -> 2x2 max-pool per stage, then a linear classifier). The configs
here turn per-step batch-norm rows off (:func:`plain_config`), so the parameter names
and shapes are those of the metasuite backbone and a system's parameters can be fed
to it directly. The inner loops and meta-updates of each learner are written in its
test with ``torch.autograd.grad``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maml_helpers import tiny_config
from metasuite.config import ExperimentConfig

Params = dict[str, torch.Tensor]


def plain_config(**changes: object) -> ExperimentConfig:
    """tiny_config with no per-step batch-norm rows or MSL: the plain network applies."""
    base: dict[str, object] = {
        "per_step_bn_statistics": False,
        "use_multi_step_loss_optimization": False,
        "batch_size": 2,
    }
    return tiny_config(**(base | changes))


def plain_features(params: Params, x: torch.Tensor, stages: int) -> torch.Tensor:
    """The network's embedding (everything before the classifier) of images ``x``."""
    for i in range(stages):
        x = F.conv2d(x, params[f"conv{i}.weight"], params[f"conv{i}.bias"], padding=1)
        x = F.batch_norm(
            x, None, None, params[f"norm{i}.weight"], params[f"norm{i}.bias"], True, 0.1, 1e-5
        )
        x = F.max_pool2d(F.leaky_relu(x, 0.01), 2)
    return x.flatten(1)


def plain_logits(params: Params, x: torch.Tensor, stages: int) -> torch.Tensor:
    """The network's logits for images ``x [n, C, H, W]``."""
    features = plain_features(params, x, stages)
    return F.linear(features, params["linear.weight"], params["linear.bias"])


def no_inner_loop_config(learner: str, **changes: object) -> ExperimentConfig:
    """plain_config for a learner without an inner loop (ProtoNet, the baselines): every
    inner-loop switch off and the inner-loop numbers at their defaults."""
    base: dict[str, object] = {
        "meta_learner": learner,
        "second_order": False,
        "learnable_per_layer_per_step_inner_loop_learning_rate": False,
        "number_of_training_steps_per_iter": 5,
        "number_of_evaluation_steps_per_iter": 5,
    }
    return plain_config(**(base | changes))


def plain_sgd(
    params: Params,
    names: list[str],
    rates: dict[str, list[torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
    stages: int,
    steps: int,
    create_graph: bool,
) -> Params:
    """``steps`` SGD steps on ``names`` (rate of step s: ``rates[name][s]``, a scalar or
    a tensor of the parameter's shape) on the loss of (x, y)."""
    fast = dict(params)
    for s in range(steps):
        loss = F.cross_entropy(plain_logits(fast, x, stages), y)
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=create_graph)
        for n, g in zip(names, grads, strict=True):
            fast[n] = fast[n] - rates[n][min(s, len(rates[n]) - 1)] * g
    return fast


# ---------------------------------------------------------------- learner settings
# The tiny configs' inner-loop settings, turned off or back to their defaults for the
# learners without an inner loop (ProtoNet and the baselines refuse anything else).
NO_INNER_LOOP: dict[str, object] = {
    "second_order": False,
    "use_multi_step_loss_optimization": False,
    "learnable_per_layer_per_step_inner_loop_learning_rate": False,
    "per_step_bn_statistics": False,
    "number_of_training_steps_per_iter": 5,
    "number_of_evaluation_steps_per_iter": 5,
    "multi_step_loss_num_epochs": 10,
    "first_order_to_second_order_epoch": -1,
}

# What Reptile refuses of the MAML++ settings (no meta-gradient through the inner loop).
REPTILE: dict[str, object] = {
    "meta_learner": "reptile",
    "second_order": False,
    "use_multi_step_loss_optimization": False,
    "learnable_per_layer_per_step_inner_loop_learning_rate": False,
}

LEARNER_SETTINGS: dict[str, dict[str, object]] = {
    "maml": {},
    "meta_sgd": {"meta_learner": "meta_sgd"},
    "anil": {"meta_learner": "anil"},
    "reptile": REPTILE,
    "protonet": {"meta_learner": "protonet", **NO_INNER_LOOP},
    "baseline": {"meta_learner": "baseline", **NO_INNER_LOOP, "finetune_steps": 10},
    "baseline_pp": {"meta_learner": "baseline_pp", **NO_INNER_LOOP, "finetune_steps": 5},
}
"""Each meta-learner's config keys on top of a tiny config (few fine-tuning steps)."""
