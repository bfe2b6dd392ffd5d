"""Every fast backend computes the reference loop's loss and meta-gradient.

Tiny networks on random images: near-ties in max-pooling (which float rounding can
flip) are vanishingly unlikely there, so the backends must agree to 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from maml_helpers import random_batch, tiny_config
from metasuite.learner.backends import BACKENDS, grouped_backend, task_chunks
from metasuite.learner.reference import eval_plan, train_plan
from metasuite.learner.system import MamlSystem

FAST = [name for name in BACKENDS if name != "loop"]

SWITCHES = {
    "maml++": {},
    "plain": {
        "use_multi_step_loss_optimization": False,
        "per_step_bn_statistics": False,
        "learnable_per_layer_per_step_inner_loop_learning_rate": False,
    },
    "bn-inner": {"enable_inner_loop_optimizable_bn_params": True},
    "no-gamma-msl-late": {"learnable_bn_gamma": False, "multi_step_loss_num_epochs": 1},
    "strided": {"max_pooling": False, "cnn_blocks_per_stage": 2, "num_stages": 2},
    "layer-norm": {"norm_layer": "layer_norm", "per_step_bn_statistics": False},
    "layer-norm-inner": {
        "norm_layer": "layer_norm",
        "per_step_bn_statistics": False,
        "enable_inner_loop_optimizable_bn_params": True,
    },
}


def _run(name, system, batch, plan, wrt=True):
    records = [] if system.net.per_step_stats else None
    result = BACKENDS[name](
        system.net,
        system.params,
        system.rates,
        system.inner_names,
        batch,
        plan,
        records,
        system.meta_parameters() if wrt else None,
    )
    return result, records


def _assert_close(a, b, what):
    assert a.shape == b.shape, what
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("second_order", [False, True])
@pytest.mark.parametrize("switches", list(SWITCHES))
def test_backend_matches_the_reference_loop(backend, second_order, switches):
    cfg = tiny_config(second_order=second_order, **SWITCHES[switches])
    system = MamlSystem(cfg, backend="loop")
    batch = random_batch(cfg)
    plan = train_plan(cfg, epoch=1)
    ref, ref_records = _run("loop", system, batch, plan)
    got, got_records = _run(backend, system, batch, plan)
    _assert_close(got.loss_sum, ref.loss_sum, "loss")
    _assert_close(got.logits, ref.logits, "logits")
    names = list(system.params) + [f"rate:{k}" for k in system.rates] * system.learnable_rates
    assert len(names) == len(ref.grads) == len(got.grads)
    for name, g, r in zip(names, got.grads, ref.grads, strict=True):
        _assert_close(g, r, f"meta-gradient of {name}")
    assert (ref_records is None) == (got_records is None)
    if ref_records is not None:
        assert len(got_records) == len(ref_records) == len(batch)
        for task_got, task_ref in zip(got_records, ref_records, strict=True):
            assert [row for row, _ in task_got] == [row for row, _ in task_ref]
            for (_, layers_got), (_, layers_ref) in zip(task_got, task_ref, strict=True):
                for (mg, vg), (mr, vr) in zip(layers_got, layers_ref, strict=True):
                    _assert_close(mg, mr, "running mean record")
                    _assert_close(vg, vr, "running var record")


@pytest.mark.parametrize("backend", FAST)
def test_backend_matches_the_loop_in_evaluation(backend):
    cfg = tiny_config(number_of_evaluation_steps_per_iter=5)  # more steps than trained
    system = MamlSystem(cfg, backend="loop")
    batch = random_batch(cfg, seed=3)
    ref, _ = _run("loop", system, batch, eval_plan(cfg), wrt=False)
    got, _ = _run(backend, system, batch, eval_plan(cfg), wrt=False)
    assert ref.grads is None and got.grads is None
    _assert_close(got.logits, ref.logits, "logits")


def test_second_order_gradients_differ_from_first_order():
    batch = random_batch(tiny_config())
    grads = {}
    for order in (False, True):
        cfg = tiny_config(second_order=order)
        system = MamlSystem(cfg, backend="loop")
        grads[order], _ = _run("loop", system, batch, train_plan(cfg, epoch=0))
    first, second = grads[False].grads, grads[True].grads
    assert torch.allclose(grads[False].loss_sum, grads[True].loss_sum)  # same forward
    differs = [
        not torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(first, second, strict=True)
    ]
    assert sum(differs) >= len(first) // 2


@pytest.mark.parametrize("group_size", [1, 2, 5])
@pytest.mark.parametrize("switches", ["maml++", "bn-inner", "plain"])
def test_task_groups_match_the_reference_loop(group_size, switches):
    """Chunks of 1, 2 (+ a single task left over) and all 5 tasks side by side."""
    cfg = tiny_config(batch_size=5, **SWITCHES[switches])
    system = MamlSystem(cfg, backend="loop")
    batch = random_batch(cfg)
    plan = train_plan(cfg, epoch=1)
    ref, ref_records = _run("loop", system, batch, plan)
    records = [] if ref_records is not None else None
    got = grouped_backend(
        system.net,
        system.params,
        system.rates,
        system.inner_names,
        batch,
        plan,
        records,
        system.meta_parameters(),
        workers=2,
        group_size=group_size,
    )
    _assert_close(got.loss_sum, ref.loss_sum, "loss")
    _assert_close(got.logits, ref.logits, "logits")
    for i, (g, r) in enumerate(zip(got.grads, ref.grads, strict=True)):
        _assert_close(g, r, f"meta-gradient {i}")
    if ref_records is None:
        assert records is None
        return
    assert len(records) == len(ref_records) == 5
    for task_got, task_ref in zip(records, ref_records, strict=True):
        assert [row for row, _ in task_got] == [row for row, _ in task_ref]
        for (_, layers_got), (_, layers_ref) in zip(task_got, task_ref, strict=True):
            for (mg, vg), (mr, vr) in zip(layers_got, layers_ref, strict=True):
                _assert_close(mg, mr, "running mean record")
                _assert_close(vg, vr, "running var record")


def test_task_chunks_are_consecutive_and_cover_the_batch():
    assert task_chunks(8, 4) == [range(0, 4), range(4, 8)]
    assert task_chunks(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert task_chunks(3, 1) == [range(0, 1), range(1, 2), range(2, 3)]


def test_grouped_backend_is_deterministic_and_independent_of_worker_count():
    cfg = tiny_config(batch_size=5)
    system = MamlSystem(cfg, backend="loop")
    batch = random_batch(cfg)
    plan = train_plan(cfg, epoch=0)
    meta = system.meta_parameters()
    args = (system.net, system.params, system.rates, system.inner_names, batch, plan, None, meta)
    threads_before = torch.get_num_threads()
    one = grouped_backend(*args, workers=1)
    for workers in (2, 3, 2):
        other = grouped_backend(*args, workers=workers)
        assert torch.equal(one.loss_sum, other.loss_sum)
        assert all(torch.equal(a, b) for a, b in zip(one.grads, other.grads, strict=True))
    assert torch.get_num_threads() == threads_before  # workers set their own, not ours


def test_training_steps_agree_across_backends():
    cfg = tiny_config()
    states, outputs = {}, {}
    for name in BACKENDS:
        system = MamlSystem(cfg, backend=name)
        for it in range(3):
            system.train_step(random_batch(cfg, seed=10 + it), epoch=it)
        states[name] = system.state_dict()
        outputs[name] = system.evaluate(random_batch(cfg, seed=99)).probabilities
    ref = states.pop("loop")
    for name, state in states.items():
        torch.testing.assert_close(outputs[name], outputs["loop"], rtol=1e-4, atol=1e-5)
        for group in ("params", "rates", "buffers"):
            for key, value in ref[group].items():
                if (key.startswith("conv") and key.endswith(".bias")) or "running_mean" in key:
                    # Batch norm cancels conv biases: their meta-gradient is rounding
                    # noise, which Adam scales up to lr-sized steps of random sign; the
                    # running means see those biases. Neither changes any output.
                    continue
                torch.testing.assert_close(
                    state[group][key],
                    value,
                    rtol=1e-4,
                    atol=1e-5,
                    msg=lambda m, n=name, k=key: f"{n} {k}: {m}",
                )


@pytest.mark.parametrize("backend", ["loop", "grouped"])
def test_bf16_autocast_runs_close_to_fp32(backend):
    cfg = tiny_config()
    batch = random_batch(cfg)
    losses = {}
    for precision in ("fp32", "bf16"):
        system = MamlSystem(tiny_config(precision=precision), backend=backend)
        metrics = system.train_step(batch, epoch=0)
        assert all(torch.isfinite(p).all() for p in system.meta_parameters())
        losses[precision] = metrics["loss"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
