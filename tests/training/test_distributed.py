"""Data-parallel meta-training on the CPU (gloo): 2 ranks compute what 1 process computes.

The ranks are real processes (torch.multiprocessing spawn) joined by a gloo process
group over localhost, each running metasuite.training.distributed's collectives on the real
Omniglot tasks. Whole-job behaviour (launcher, kill a rank, resume) is in
tests/training/test_distributed_job.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from meta_learner_helpers import LEARNER_SETTINGS
from metasuite.config import ExperimentConfig, replace
from metasuite.training import distributed
from metasuite.training.distributed import DistContext, slot_order
from tolerances import FLOAT32_ATOL, FLOAT32_RTOL, float32_reordered

BATCH = 5  # odd, so the ranks hold different numbers of tasks (3 and 2)
EVAL_TASKS = 3


# Each meta-learner, with every synchronised part it has (Reptile: no second order, MSL
# or learned rates; its all-reduced "gradient" is the mean of theta - theta_tilde), and
# networks on the generic nn.Module path (dropout/DropBlock seeded per task, so the ranks
# draw one process's masks).
LEARNERS: dict[str, dict[str, object]] = {
    **{k: v for k, v in LEARNER_SETTINGS.items() if k != "baseline"},
    "resnet12": {
        "backbone": "resnet12",
        "backbone_kwargs": {"widths": [4, 4, 6, 6], "dropblock_rate": 0.1, "dropblock_size": 3},
    },
    "module-anil": {"backbone": "backbone_helpers:two_conv_net", "meta_learner": "anil"},
}


@pytest.fixture(scope="module", params=list(LEARNERS))
def learner_name(request) -> str:
    return request.param


def tiny_config(base: ExperimentConfig, learner: str = "maml") -> ExperimentConfig:
    """Second order, MSL, LSLR and per-step BN statistics: every synchronised part."""
    config = replace(
        base,
        batch_size=BATCH,
        number_of_training_steps_per_iter=2,
        number_of_evaluation_steps_per_iter=2,
        second_order=True,
        first_order_to_second_order_epoch=-1,
        use_multi_step_loss_optimization=True,
        per_step_bn_statistics=True,
        learnable_per_layer_per_step_inner_loop_learning_rate=True,
        backend="loop",
    )
    return replace(config, **LEARNERS[learner])


def one_meta_step(learner, batch, sync_gradients=None, *, total_tasks=None):
    """Train one step; return (metrics, synchronised meta-gradients, state after)."""
    captured: list[torch.Tensor] = []

    def sync(grads: list[torch.Tensor]) -> None:
        if sync_gradients is not None:
            sync_gradients(grads)
        captured.extend(g.detach().clone() for g in grads)

    metrics = learner.train_step(batch, 0, total_tasks=total_tasks, sync_gradients=sync)
    return metrics, captured, learner.state_dict()


def _rank_main(rank: int, world: int, port: int, config: ExperimentConfig, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from metasuite.data.tasks import FewShotTasks
    from metasuite.learner.learners import build_learner
    from metasuite.training.signals import StopRequest

    ctx = DistContext(rank=rank, world_size=world, local_rank=rank, local_world_size=world)
    comm = distributed.Collectives.init(ctx, torch.device("cpu"))
    try:
        tasks = FewShotTasks.from_config(config, quiet=True)
        torch.manual_seed(config.train_seed)
        learner = distributed.DistributedLearner(
            build_learner(config, "cpu", num_labels=tasks.train.num_labels),
            comm,
            distributed.AgreedStop(StopRequest()),
        )
        slots = list(range(rank, BATCH, world))  # Builder.rank_slots
        iteration = 7
        batch = tasks.train.batch([iteration * BATCH + b for b in slots])
        metrics, grads, state = one_meta_step(
            learner, batch, comm.all_reduce_sum_, total_tasks=BATCH
        )
        evaluation = learner.evaluate(tasks.val.batch(range(EVAL_TASKS)))
        torch.save(
            {
                "task_ids": batch.task_ids,
                "metrics": metrics,
                "grads": grads,
                "state": state,
                "eval": evaluation,
            },
            out,
        )
    finally:
        comm.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(omniglot_config: ExperimentConfig, tmp_path_factory, learner_name) -> list[dict]:
    folder = tmp_path_factory.mktemp("ranks")
    config = tiny_config(omniglot_config, learner_name)
    outs = [str(folder / f"rank{r}.pt") for r in range(2)]
    port = _free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, config, outs[r])) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0, f"rank process failed with exit code {p.exitcode}"
    return [torch.load(o, weights_only=False) for o in outs]


@pytest.fixture(scope="module")
def one_process(omniglot_config: ExperimentConfig, omniglot_tasks, learner_name) -> dict:
    from metasuite.learner.learners import build_learner

    config = tiny_config(omniglot_config, learner_name)
    # The ranks run one thread each; so does the reference: the thread count alone moves
    # second-order gradients by ~1e-5 (a different reduction order in the conv kernels).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(config.train_seed)
        learner = build_learner(config, "cpu", num_labels=omniglot_tasks.train.num_labels)
        batch = omniglot_tasks.train.batch([7 * BATCH + b for b in range(BATCH)])
        metrics, grads, state = one_meta_step(learner, batch)
        evaluation = learner.evaluate(omniglot_tasks.val.batch(range(EVAL_TASKS)))
    finally:
        torch.set_num_threads(threads)
    return {
        "task_ids": batch.task_ids,
        "metrics": metrics,
        "grads": grads,
        "state": state,
        "eval": evaluation,
    }


def test_ranks_share_the_meta_batch_and_together_hold_the_same_tasks(
    two_ranks: list[dict], one_process: dict
) -> None:
    assert two_ranks[0]["task_ids"] == (35, 37, 39)
    assert two_ranks[1]["task_ids"] == (36, 38)
    together = slot_order([r["task_ids"] for r in two_ranks])
    assert tuple(together) == one_process["task_ids"] == tuple(range(35, 40))


def test_two_ranks_give_the_meta_gradient_of_one_process(
    two_ranks: list[dict], one_process: dict
) -> None:
    reference = one_process["grads"]
    assert len(reference) >= 10 and all(g.abs().sum() > 0 for g in reference[-4:])
    for rank in two_ranks:
        assert len(rank["grads"]) == len(reference)
        for mine, ref in zip(rank["grads"], reference, strict=True):
            torch.testing.assert_close(mine, ref, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
    # After the all-reduce both ranks hold bit-identical gradients.
    for a, b in zip(two_ranks[0]["grads"], two_ranks[1]["grads"], strict=True):
        assert torch.equal(a, b)


def test_ranks_end_the_step_identical_and_equal_to_one_process(
    two_ranks: list[dict], one_process: dict, learner_name: str
) -> None:
    s0, s1, ref = (r["state"] for r in (*two_ranks, one_process))
    # Learners without an inner loop have no rates.
    groups = [g for g in ("params", "rates", "buffers") if g in ref]
    assert groups[0] == "params" and all(g in s0 and g in s1 for g in groups)
    # Where the loss does not depend on a weight (ProtoNet's distances do not change when
    # the last batch-norm shift moves every embedding alike), its gradient is rounding
    # noise (~1e-8) and Adam's first step turns that noise into a step of up to the
    # learning rate either way. Those elements move at most one step; the rest match.
    # (Learners without an inner loop, no rates: their gradients are the params'.)
    noise = (
        {
            name: grad.abs() < 1e-6
            for name, grad in zip(ref["params"], one_process["grads"], strict=True)
        }
        if "rates" not in ref
        else {}
    )
    step = 2 * float(one_process["metrics"]["learning_rate"])
    for group in groups:
        for name, value in ref[group].items():
            assert torch.equal(s0[group][name], s1[group][name]), (group, name)
            mine = s0[group][name]
            if group == "params" and name in noise and bool(noise[name].any()):
                assert float((mine - value)[noise[name]].abs().max()) <= step, name
                mine, value = mine[~noise[name]], value[~noise[name]]
            torch.testing.assert_close(mine, value, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
    # Per-step BN running statistics moved, and moved the same way: records gathered
    # from both ranks in task order.
    moved = [k for k, v in ref["buffers"].items() if "running_mean" in k and v.abs().sum() > 0]
    if LEARNERS[learner_name].get("per_step_bn_statistics", True):
        assert moved
    else:  # no inner steps, so no per-step statistics to keep
        assert ref["buffers"] == {}


def test_metrics_are_those_of_the_whole_meta_batch(
    two_ranks: list[dict], one_process: dict
) -> None:
    for rank in two_ranks:
        for key in ("loss", "accuracy"):
            assert rank["metrics"][key] == float32_reordered(one_process["metrics"][key])


def test_evaluation_split_across_ranks_and_gathered_in_order(
    two_ranks: list[dict], omniglot_config: ExperimentConfig, omniglot_tasks, learner_name
) -> None:
    """The gathered evaluation equals one process evaluating every task with the same
    learner state. (Compared with the one-process run's own state instead, a task can
    differ by ~1e-3: a 1e-8 change of the weights can flip a max-pool tie on Omniglot's
    flat backgrounds, and the inner loop follows the other branch.)"""
    from metasuite.learner.learners import build_learner

    config = tiny_config(omniglot_config, learner_name)
    learner = build_learner(config, "cpu", num_labels=omniglot_tasks.train.num_labels)
    learner.load_state_dict(two_ranks[0]["state"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = learner.evaluate(omniglot_tasks.val.batch(range(EVAL_TASKS)))
    finally:
        torch.set_num_threads(threads)
    for rank in two_ranks:
        ev = rank["eval"]
        assert ev.probabilities.shape == ref.probabilities.shape == (EVAL_TASKS, 5, 5)
        torch.testing.assert_close(
            ev.probabilities, ref.probabilities, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL
        )
        torch.testing.assert_close(ev.task_accuracy, ref.task_accuracy)
        assert ev.loss == float32_reordered(ref.loss)
        assert ev.accuracy == float32_reordered(ref.accuracy)


def test_slot_order_interleaves_uneven_parts() -> None:
    assert slot_order([[0, 2, 4], [1, 3]]) == [0, 1, 2, 3, 4]
    assert slot_order([[0], []]) == [0]
    assert slot_order([[0, 3], [1], [2]]) == [0, 1, 2, 3]


def test_worker_context_reads_torchrun_environment() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert distributed.worker_context(env) == DistContext(1, 2, 1, 2)
    assert distributed.worker_context({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert distributed.worker_context({}) is None


def test_a_single_process_is_a_world_of_one_that_joins_nothing() -> None:
    from metasuite.training.signals import StopRequest

    cpu = torch.device("cpu")
    learner, stop = object(), StopRequest()
    with distributed.joined(distributed.SINGLE_PROCESS, cpu) as comm:
        assert isinstance(comm, distributed.Alone) and comm.ctx.is_writer
        assert not torch.distributed.is_initialized()
        decision = {"payload": None, "done": False}
        assert comm.broadcast_object(decision) is decision
        # The builder drives the learner and stop request themselves: no wrapper, so a
        # single process computes exactly what it did before there were ranks.
        assert distributed.shared(learner, stop, comm) == (learner, stop)
    several = distributed.Collectives(DistContext(0, 2, 0, 2), cpu)  # no group joined
    wrapped, agreed = distributed.shared(learner, stop, several)
    assert isinstance(wrapped, distributed.DistributedLearner) and wrapped.learner is learner
    assert isinstance(agreed, distributed.AgreedStop) and agreed.local is stop


def test_rank_device_wants_one_gpu_per_process() -> None:
    from metasuite.errors import UserError

    ctx = DistContext(1, 2, 1, 2)
    assert distributed.rank_device([torch.device("cpu")], ctx) == torch.device("cpu")
    gpus = [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert distributed.rank_device(gpus, ctx) == torch.device("cuda", 1)
    with pytest.raises(UserError, match="names 1 GPUs but 2 processes"):
        distributed.rank_device(gpus[:1], ctx)


def test_launch_checks_the_timeout_before_starting_workers(monkeypatch) -> None:
    # Checked only in the workers, a bad value printed one error per rank and then
    # torchrun's ChildFailedError traceback.
    from metasuite.errors import UserError

    def no_popen(*args, **kwargs):
        raise AssertionError("torchrun must not start")

    monkeypatch.setenv(distributed.TIMEOUT_ENV, "abc")
    monkeypatch.setattr(distributed.subprocess, "Popen", no_popen)
    with pytest.raises(UserError, match="METASUITE_DIST_TIMEOUT_S='abc'"):
        distributed.launch(["--config", "x.json"], 2)


@pytest.mark.parametrize("world", ["launcher", "torchrun worker"])
def test_more_processes_than_tasks_in_a_meta_batch_are_refused_before_launching(
    tmp_path: Path, capsys, monkeypatch, world: str
) -> None:
    """--nproc 3 with batch_size 2: one line, exit 2, nothing launched or written (the
    third rank would have no task; before, every rank died in batch())."""
    from builder_helpers import write_config
    from metasuite import cli
    from metasuite.training import distributed

    def no_launch(*args, **kwargs):
        raise AssertionError("launched")

    monkeypatch.setattr(distributed, "launch", no_launch)
    if world == "torchrun worker":
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("RANK", "0")
    config, root = write_config(tmp_path, batch_size=2), tmp_path / "experiments"
    argv = ["train", "--config", str(config), "--gpus", "cpu", "--experiments-root", str(root)]
    code = cli.main([*argv, "--nproc", "3"] if world == "launcher" else argv)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 processes but batch_size is 2" in err[0]
    assert not root.exists()


def test_launch_after_a_sigterm_during_start_up_starts_no_worker(monkeypatch, capsys) -> None:
    """`train --nproc 2` signalled while torch loads: the recorded SIGTERM stops it with
    exit 4 before torchrun starts (instead of being lost and the job running on)."""
    import signal
    import subprocess

    from metasuite.cli import EarlyStop
    from metasuite.errors import ExitCode

    def no_workers(*args, **kwargs):
        raise AssertionError("workers started")

    monkeypatch.setattr(subprocess, "Popen", no_workers)
    early = EarlyStop()
    early(signal.SIGTERM, None)
    previous = signal.signal(signal.SIGTERM, early)
    try:
        assert distributed.launch(["--config", "x.json"], 2) == ExitCode.STOPPED
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "stopped by SIGTERM during start-up" in capsys.readouterr().err
