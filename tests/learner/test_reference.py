"""The reference MAML++ math against an independent oracle, and its schedules.

Every backend shares :func:`metasuite.learner.reference.adapt`, so a bug in it, in
``msl_weights`` or in the per-step norm rows would pass every backend equivalence test.
The oracle here is written from the paper (Antoniou et al., "How to train your MAML",
ICLR 2019) and the reference code's rules, with none of metasuite's learner code: a
tiny ``nn.Module`` run with ``torch.func.functional_call``, the inner loop differentiated
with ``torch.func.grad``, the meta-gradient with ``torch.func.grad`` of the whole
meta-loss (second order), or with the inner gradients detached (first order). It covers
MSL (per-step query-loss weights, annealed over epochs), LSLR (a learned rate per layer
per step), per-step batch-norm weights and biases (BNWB) and per-step running
statistics (BNRS). Everything runs in float64. As in the other equivalence tests the
images are random: this compares two implementations of one function, and random
images have no exact ties in max-pooling windows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from maml_helpers import random_batch, tiny_config
from metasuite.learner.backends import BACKENDS
from metasuite.learner.reference import meta_loss_loop, msl_weights, train_plan
from metasuite.learner.system import MamlSystem

# ---------------------------------------------------------------------------- oracle


class OracleBatchNorm(nn.Module):
    """The reference ``MetaBatchNormLayer``: always the batch's statistics; with BNRS the
    running statistics of inner step s are row s of ``[S, C]`` buffers, and with BNWB
    (unless the inner loop adapts them) gamma/beta are rows of ``[S, C]`` too."""

    def __init__(self, channels: int, steps: int, per_step: bool, per_step_affine: bool):
        super().__init__()
        shape = (steps, channels) if per_step_affine else (channels,)
        self.steps, self.per_step, self.per_step_affine = steps, per_step, per_step_affine
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        if per_step:
            self.register_buffer("running_mean", torch.zeros(steps, channels))
            self.register_buffer("running_var", torch.ones(steps, channels))
        self.track = False

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        row = min(step, self.steps - 1)
        weight = self.weight[row] if self.per_step_affine else self.weight
        bias = self.bias[row] if self.per_step_affine else self.bias
        if self.track and self.per_step:  # updates row `row` in place, momentum 0.1
            mean, var = self.running_mean[row], self.running_var[row]
            return F.batch_norm(x, mean, var, weight, bias, True, 0.1, 1e-5)
        return F.batch_norm(x, None, None, weight, bias, True, 0.1, 1e-5)


class OracleNet(nn.Module):
    """The paper's 4-conv network, shrunk: stages of 3x3 conv -> BN -> leaky ReLU ->
    2x2 max-pool, then a linear classifier."""

    def __init__(self, cfg, per_step: bool, per_step_affine: bool):
        super().__init__()
        self.stages = cfg.num_stages
        cin, size = cfg.image_channels, cfg.image_height
        for i in range(self.stages):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cfg.cnn_num_filters, 3, padding=1))
            norm = OracleBatchNorm(
                cfg.cnn_num_filters,
                cfg.number_of_training_steps_per_iter,
                per_step,
                per_step_affine,
            )
            setattr(self, f"norm{i}", norm)
            cin, size = cfg.cnn_num_filters, size // 2
        self.linear = nn.Linear(cin * size * size, cfg.num_classes_per_set)

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        for i in range(self.stages):
            x = getattr(self, f"norm{i}")(getattr(self, f"conv{i}")(x), step)
            x = F.max_pool2d(F.leaky_relu(x, 0.01), 2)
        return self.linear(x.flatten(1))

    def track_running_stats(self, on: bool) -> None:
        for i in range(self.stages):
            getattr(self, f"norm{i}").track = on


def paper_msl_weights(steps: int, msl_epochs: int, epoch: int) -> np.ndarray:
    """The reference code's ``get_per_step_loss_importance_vector``, as written there."""
    loss_weights = np.ones(shape=(steps,)) * (1.0 / steps)
    decay_rate = 1.0 / steps / msl_epochs
    min_value_for_non_final_losses = 0.03 / steps
    for i in range(len(loss_weights) - 1):
        loss_weights[i] = np.maximum(
            loss_weights[i] - (epoch * decay_rate), min_value_for_non_final_losses
        )
    loss_weights[-1] = np.minimum(
        loss_weights[-1] + (epoch * (steps - 1) * decay_rate),
        1.0 - ((steps - 1) * min_value_for_non_final_losses),
    )
    return loss_weights


class Oracle:
    """The MAML++ meta-loss of a task batch, its meta-gradient and running statistics."""

    def __init__(self, cfg, epoch: int):
        self.cfg, self.epoch = cfg, epoch
        self.steps = cfg.number_of_training_steps_per_iter
        per_step = cfg.per_step_bn_statistics
        inner_bn = cfg.enable_inner_loop_optimizable_bn_params
        self.net = OracleNet(cfg, per_step, per_step and not inner_bn).double()
        self.inner = [
            n
            for n, _ in self.net.named_parameters()
            if n.startswith(("conv", "linear")) or (inner_bn and n.startswith("norm"))
        ]
        self.msl = cfg.use_multi_step_loss_optimization and epoch < cfg.multi_step_loss_num_epochs
        self.weights = paper_msl_weights(self.steps, cfg.multi_step_loss_num_epochs, epoch)
        self.second_order = cfg.second_order and epoch > cfg.first_order_to_second_order_epoch

    def _logits(self, params, x, step, track=False):
        """The network's logits; with ``track`` the pass updates the running stats."""
        self.net.track_running_stats(track)
        try:
            return functional_call(self.net, params, (x, step))
        finally:
            self.net.track_running_stats(False)

    def task_loss(self, meta, rates, sx, sy, qx, qy, replay: bool = False):
        """One task: S inner SGD steps with LSLR rates, MSL-weighted query losses."""
        fast = {n: meta[n] for n in self.inner}
        total = 0.0
        for step in range(self.steps):

            def support_loss(f, step=step):
                return F.cross_entropy(self._logits({**meta, **f}, sx, step), sy)

            if replay:  # the support pass's batch statistics, into the running stats
                with torch.no_grad():
                    self._logits({**meta, **fast}, sx, step, track=True)
            grads = torch.func.grad(support_loss)(fast)
            if not self.second_order:
                grads = {n: g.detach() for n, g in grads.items()}
            fast = {n: fast[n] - rates[n][step] * grads[n] for n in self.inner}
            # With MSL the query loss counts after every step, else after the last only.
            if self.msl or step == self.steps - 1:
                logits = self._logits({**meta, **fast}, qx, step, track=replay)
                weight = self.weights[step] if self.msl else 1.0
                total = total + weight * F.cross_entropy(logits, qy)
        return total

    def meta_loss(self, meta, rates, tasks):
        """The mean over the tasks of the task losses."""
        count = tasks[0].shape[0]
        losses = [self.task_loss(meta, rates, *(t[i] for t in tasks)) for i in range(count)]
        return sum(losses) / count

    def meta_gradient(self, meta, rates, tasks):
        """(meta-loss, d/d meta-parameters, d/d rates) by torch.func.grad."""
        (g_meta, g_rates), loss = torch.func.grad_and_value(self.meta_loss, argnums=(0, 1))(
            meta, rates, tasks
        )
        return loss, g_meta, g_rates

    def running_stats(self, meta, rates, tasks):
        """The running statistics after one meta-batch: every forward pass of every task,
        in order, updates its step's row (support at step s, then query after step s)."""
        for i in range(tasks[0].shape[0]):
            self.task_loss(meta, rates, *(t[i] for t in tasks), replay=True)
        return {n: b.clone() for n, b in self.net.named_buffers()}


def _batch(cfg):
    """The oracle's (support x, support y, query x, query y) and the same TaskBatch."""
    b = random_batch(cfg)
    return (b.support_x, b.support_y, b.query_x, b.query_y), b


# ---------------------------------------------------------------------------- tests
SWITCHES = {
    "maml++": {},  # MSL (epoch 1 of 10), LSLR learned, BNWB + BNRS
    "msl-finished": {"multi_step_loss_num_epochs": 1},  # epoch 1: final-step loss only
    "msl-off": {"use_multi_step_loss_optimization": False},
    "maml": {
        "use_multi_step_loss_optimization": False,
        "per_step_bn_statistics": False,
        "learnable_per_layer_per_step_inner_loop_learning_rate": False,
    },
    "bn-inner": {"enable_inner_loop_optimizable_bn_params": True},
}


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _close(got, expected, what):
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12, msg=lambda m: f"{what}: {m}")


def _perturbed(system, seed=0):
    """Meta-parameters and rates moved off their initial values (gamma 1, beta 0, one
    rate for all), so that per-step rows and per-tensor rates differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for scale, group in ((0.1, system.params), (0.02, system.rates)):
            for value in group.values():
                value.add_(scale * torch.rand(value.shape, generator=g, dtype=value.dtype))


@pytest.mark.parametrize("second_order", [False, True])
@pytest.mark.parametrize("switches", list(SWITCHES))
def test_reference_meta_loss_and_gradient_match_the_oracle(float64, switches, second_order):
    cfg = tiny_config(second_order=second_order, batch_size=2, **SWITCHES[switches])
    epoch = 1
    system = MamlSystem(cfg, backend="loop")
    _perturbed(system)
    tasks, batch = _batch(cfg)
    rates = {k: v.detach().requires_grad_() for k, v in system.rates.items()}  # fixed or not
    loss_sum, _ = meta_loss_loop(
        system.net, system.params, rates, system.inner_names, batch, train_plan(cfg, epoch)
    )
    meta_loss = loss_sum / len(batch)
    wrt = [*system.params.values(), *rates.values()]
    grads = torch.autograd.grad(meta_loss, wrt)
    oracle = Oracle(cfg, epoch)
    assert sorted(oracle.inner) == sorted(system.inner_names)
    meta = {k: v.detach() for k, v in system.params.items()}
    rates = {k: v.detach() for k, v in system.rates.items()}
    expected, g_meta, g_rates = oracle.meta_gradient(meta, rates, tasks)
    _close(meta_loss.detach(), expected, "meta-loss")
    names = [*system.params, *(f"rate:{k}" for k in system.rates)]
    for name, got, want in zip(names, grads, [*g_meta.values(), *g_rates.values()], strict=True):
        _close(got, want, f"meta-gradient of {name}")


@pytest.mark.parametrize(
    ("backend", "second_order", "switches"),
    [(b, True, "maml++") for b in BACKENDS]
    + [("loop", False, "maml++"), ("loop", True, "bn-inner")],
)
def test_system_gradients_and_running_stats_match_the_oracle(
    float64, backend, second_order, switches
):
    """What MamlSystem.train_step hands to Adam, and the running statistics it keeps."""
    cfg = tiny_config(second_order=second_order, batch_size=2, **SWITCHES[switches])
    epoch = 1
    system = MamlSystem(cfg, backend=backend)
    _perturbed(system, seed=1)
    meta = {k: v.detach().clone() for k, v in system.params.items()}
    rates = {k: v.detach().clone() for k, v in system.rates.items()}
    tasks, batch = _batch(cfg)
    seen = []
    system.train_step(batch, epoch, sync_gradients=lambda g: seen.append([t.clone() for t in g]))
    oracle = Oracle(cfg, epoch)
    _, g_meta, g_rates = oracle.meta_gradient(meta, rates, tasks)
    (grads,) = seen
    assert len(grads) == len(g_meta) + len(g_rates)  # LSLR: the rates are learned
    for name, got, want in zip(
        [*meta, *rates], grads, [*g_meta.values(), *g_rates.values()], strict=True
    ):
        _close(got, want, f"meta-gradient of {name}")
    stats = oracle.running_stats(meta, rates, tasks)
    assert sorted(stats) == sorted(system.buffers)
    for name, value in system.buffers.items():
        # The recorded variances come from the batch-norm kernel's inverse std through
        # float32 (so that bf16 runs record float32 statistics): float32 precision here.
        torch.testing.assert_close(value, stats[name], rtol=1e-6, atol=1e-9, msg=name)


def test_first_and_second_order_oracles_differ(float64):
    """The oracle's first order is not its second order in disguise."""
    system = MamlSystem(tiny_config(), backend="loop")
    meta = {k: v.detach() for k, v in system.params.items()}
    rates = {k: v.detach() for k, v in system.rates.items()}
    tasks, _ = _batch(tiny_config(batch_size=1))
    first = Oracle(tiny_config(second_order=False), 1).meta_gradient(meta, rates, tasks)
    second = Oracle(tiny_config(second_order=True), 1).meta_gradient(meta, rates, tasks)
    torch.testing.assert_close(first[0], second[0])  # the same meta-loss
    assert not torch.allclose(first[1]["conv1.weight"], second[1]["conv1.weight"], rtol=1e-3)


def test_msl_weights_are_the_reference_codes_importance_vector():
    for steps, epochs in [(5, 10), (3, 2), (1, 4)]:
        for epoch in [0, 1, epochs // 2, epochs - 1, epochs, 3 * epochs]:
            expected = paper_msl_weights(steps, epochs, epoch)
            assert msl_weights(steps, epochs, epoch) == pytest.approx(list(expected), abs=1e-15)


def test_msl_weights_follow_the_rule_at_start_middle_and_end():
    s, epochs = 5, 10
    start = msl_weights(s, epochs, 0)
    assert start == pytest.approx([0.2] * 5)
    mid = msl_weights(s, epochs, 5)
    # each non-final weight falls by 1/(S*E) per epoch: 0.2 - 5 * 0.02 = 0.1
    assert mid[:4] == pytest.approx([0.1] * 4)
    assert mid[4] == pytest.approx(0.6)
    end = msl_weights(s, epochs, 9)
    # 0.2 - 9 * 0.02 = 0.02 is above the floor 0.03 / 5 = 0.006
    assert end[:4] == pytest.approx([0.02] * 4)
    late = msl_weights(s, epochs, 30)
    assert late[:4] == pytest.approx([0.006] * 4)
    for w in (start, mid, end, late):
        assert sum(w) == pytest.approx(1.0)


def test_train_plan_switches_msl_off_after_its_epochs_and_second_order_on_after_da():
    cfg = tiny_config(multi_step_loss_num_epochs=2, first_order_to_second_order_epoch=1)
    assert train_plan(cfg, 0).loss_weights == pytest.approx(msl_weights(3, 2, 0))
    assert train_plan(cfg, 2).loss_weights == (0.0, 0.0, 1.0)
    assert not train_plan(cfg, 1).second_order
    assert train_plan(cfg, 2).second_order
    plain = tiny_config(use_multi_step_loss_optimization=False)
    assert train_plan(plain, 0).loss_weights == (0.0, 0.0, 1.0)
