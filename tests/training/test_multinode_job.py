"""Multi-node jobs on one host: two ``metasuite train --nnodes 2 --node-rank R
--rdzv-endpoint 127.0.0.1:PORT`` launchers (2 nodes x 1 gloo process, c10d rendezvous on
localhost only) train on the real Omniglot data.

Two nodes against one process: the first meta-gradient (Adam's first moment after one
step is 0.1 g) within 1e-6, and every tensor of the learner (weights, rates, BN buffers,
Adam state) and every summary row within float32 summation order (tests/tolerances.py)
after each epoch (a process sums its tasks' gradients inside autograd, ranks through an
all-reduce). Task ids per rank are
checked in-process in tests/training/test_distributed.py; equal meta-gradients here mean
the same task set. Resume after a killed node is compared exactly with the same job
left alone.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from builder_helpers import train_command, train_env, write_config
from metasuite.training.checkpoint import load_checkpoint
from tolerances import FLOAT32_ATOL, FLOAT32_RTOL, assert_rows_agree

JOB_TIMEOUT_S = 300
"""A hang guard, not a speed assertion."""
DIST_TIMEOUT_S = 60
"""$METASUITE_DIST_TIMEOUT_S here: how long a rank waits for a dead peer at worst."""

CONFIG = {
    "total_epochs": 2,
    "total_iter_per_epoch": 2,
    "total_epochs_before_pause": 1,  # every run trains one epoch and pauses (exit 3)
    "checkpoint_every_n_iters": 1,
    "num_evaluation_tasks": 4,
    "batch_size": 2,
}
BETA1 = 0.9  # torch.optim.Adam's default, which MamlSystem uses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(**extra: str) -> dict[str, str]:
    return train_env(METASUITE_DIST_TIMEOUT_S=str(DIST_TIMEOUT_S), **extra)


def node_command(config: Path, root: Path, rank: int, port: int) -> list[str]:
    return train_command(
        config, root, "--nnodes", "2", "--node-rank", str(rank),
        "--rdzv-endpoint", f"127.0.0.1:{port}",
    )  # fmt: skip


def start_nodes(config: Path, root: Path, logs: Path, env: dict[str, str]) -> list:
    """Both node launchers, each with its stderr in a file (a pipe could fill up)."""
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in (0, 1):
        with open(logs / f"node{rank}.err", "w") as err:
            procs.append(
                subprocess.Popen(node_command(config, root, rank, port), env=env, stderr=err)
            )
    return procs


def finish(procs: list) -> list[int]:
    return [p.wait(timeout=JOB_TIMEOUT_S) for p in procs]


def stderr_of(logs: Path) -> str:
    return "\n".join(f"{p.name}:\n{p.read_text()}" for p in sorted(logs.glob("node*.err")))


def run_nodes(config: Path, root: Path, logs: Path, env: dict[str, str] | None = None):
    procs = start_nodes(config, root, logs, env or env_for())
    return finish(procs)


def run_one(config: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        train_command(config, root),
        env=env_for(),
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
    )


def state(root: Path) -> dict:
    return json.loads((root / "tiny" / "state.json").read_text())


def checkpoint(root: Path, name: str) -> dict:
    return load_checkpoint(root / "tiny" / "checkpoints" / name)


def tensors(payload: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's learner (weights, rates, BN buffers, Adam state)."""
    out: dict[str, torch.Tensor] = {}

    def walk(x, key: str) -> None:
        if isinstance(x, torch.Tensor):
            out[key] = x
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{key}/{k}")
        elif isinstance(x, list | tuple):
            for i, v in enumerate(x):
                walk(v, f"{key}/{i}")

    walk(payload["learner"], "learner")
    return out


def assert_same_learner(a: dict, b: dict, *, exact: bool = True) -> None:
    """Every learner tensor equal; or, across world sizes, equal up to float summation
    order (seen: 1.5e-8 after 3 meta-iterations)."""
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    if exact:
        different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    else:
        different = [
            k for k in ta if not torch.allclose(ta[k], tb[k], rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
        ]
    assert not different, different[:5]


def first_meta_gradient(payload: dict) -> list[torch.Tensor]:
    """g of the first Adam step from the iteration-1 checkpoint: exp_avg = (1 - beta1) g."""
    states = payload["learner"]["optimizer"]["state"]
    return [states[i]["exp_avg"] / (1 - BETA1) for i in sorted(states)]


def assert_same_results(root: Path, expected: Path) -> None:
    """Same end (state.json) and the same summary rows. The learner is compared exactly
    elsewhere; the metrics of a meta-batch trained on 2 ranks are summed across them in
    float64 (one process averages float32), so they agree to float32 precision only."""
    keys = ("status", "epoch", "iteration", "test_accuracy")
    assert {k: state(root)[k] for k in keys} == {k: state(expected)[k] for k in keys}
    got, want = summary(root), summary(expected)
    assert len(got) == len(want)
    for row, ref in zip(got, want, strict=True):
        assert_rows_agree(row, ref)


def summary(root: Path) -> list[dict[str, str]]:
    with open(root / "tiny" / "summary_statistics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One plain process, uninterrupted apart from its pause: the run to match.
    ``paused`` is a copy of its folder after the first epoch (exit 3)."""
    base = tmp_path_factory.mktemp("reference")
    config = write_config(base, **CONFIG)
    root = base / "one"
    first = run_one(config, root)
    assert first.returncode == 3, first.stderr
    paused = base / "paused"
    shutil.copytree(root, paused)
    second = run_one(config, root)
    assert second.returncode == 0, second.stderr
    return {"config": config, "root": root, "paused": paused}


@pytest.mark.slow
def test_two_nodes_compute_what_one_process_computes_then_resume_on_one(
    reference: dict[str, Path], tmp_path: Path
) -> None:
    config, root, logs = reference["config"], tmp_path / "two", tmp_path / "logs"
    codes = run_nodes(config, root, logs)
    # The pause (3) survives torchrun and the launcher on BOTH nodes.
    assert codes == [3, 3], stderr_of(logs)
    assert state(root)["world_size"] == 2 and state(root)["status"] == "paused"
    assert "on 2 processes (cpu, gloo)" in stderr_of(logs)

    one_iter1 = checkpoint(reference["paused"], "iter_00000001.pt")
    two_iter1 = checkpoint(root, "iter_00000001.pt")
    for g_one, g_two in zip(
        first_meta_gradient(one_iter1), first_meta_gradient(two_iter1), strict=True
    ):
        assert g_one.abs().max() > 0
        assert torch.allclose(g_two, g_one, rtol=0, atol=FLOAT32_ATOL)
    assert_same_learner(two_iter1, one_iter1, exact=False)
    epoch0 = "epoch_0000_iter_00000002.pt"
    assert_same_learner(
        checkpoint(root, epoch0), checkpoint(reference["paused"], epoch0), exact=False
    )
    # Only rank 0 wrote: one run in the manifest.
    manifest = json.loads((root / "tiny" / "manifest.json").read_text())
    assert len(manifest["runs"]) == 1

    # 2 nodes x 1 -> 1 x 1: the second epoch on one process ends where the reference does.
    last = run_one(config, root)
    assert last.returncode == 0, last.stderr
    assert state(root)["world_size"] == 1
    assert_same_results(root, reference["root"])
    end = "epoch_0001_iter_00000004.pt"
    assert_same_learner(checkpoint(root, end), checkpoint(reference["root"], end), exact=False)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc), children first found last."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


@pytest.mark.slow
def test_a_killed_node_takes_the_job_down_and_both_resume_to_the_same_result(
    reference: dict[str, Path], tmp_path: Path
) -> None:
    # Epoch 0 was trained by one process (1 x 1 -> 2 x 1 from here on). The same job left
    # alone, for the exact comparison:
    config, straight = reference["config"], tmp_path / "straight"
    shutil.copytree(reference["paused"], straight)
    assert run_nodes(config, straight, tmp_path / "logs-straight") == [0, 0]
    assert_same_results(straight, reference["root"])

    root, logs = tmp_path / "kill", tmp_path / "logs"
    shutil.copytree(reference["paused"], root)
    procs = start_nodes(config, root, logs, env_for(METASUITE_FAULT_SLEEP="iteration:1"))
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (root / "tiny" / "checkpoints" / "iter_00000003.pt").exists():
        assert all(p.poll() is None for p in procs), stderr_of(logs)
        assert time.monotonic() < deadline, "no mid-epoch checkpoint"
        time.sleep(0.1)
    # Node 1 dies: its launcher, torchrun and worker, all at once.
    for pid in descendants(procs[1].pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    code = procs[0].wait(timeout=JOB_TIMEOUT_S)
    procs[1].wait(timeout=30)
    assert code != 0, stderr_of(logs)
    # Within the process-group timeout at worst (gloo usually notices at once).
    assert time.monotonic() - killed_at < DIST_TIMEOUT_S + 60, stderr_of(logs)
    assert state(root)["status"] in ("failed", "running")

    again = run_nodes(config, root, tmp_path / "logs-again")
    assert again == [0, 0], stderr_of(tmp_path / "logs-again")
    assert "resuming from iter_00000003.pt" in stderr_of(tmp_path / "logs-again")
    assert_same_results(root, straight)
    end = "epoch_0001_iter_00000004.pt"
    assert_same_learner(checkpoint(root, end), checkpoint(straight, end))
    assert state(root)["test_accuracy"] == state(straight)["test_accuracy"]


def lone_node(tmp_path: Path, rank: int, port: int, timeout_s: int = 3):
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp_path, **CONFIG)
    root = tmp_path / "runs"
    started = time.monotonic()
    result = subprocess.run(
        train_command(config, root, "--nnodes", "2", "--node-rank", str(rank),
                      "--rdzv-endpoint", f"127.0.0.1:{port}"),
        env=env_for(METASUITE_RDZV_TIMEOUT_S=str(timeout_s)),
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    return result, root, time.monotonic() - started


def assert_one_line_and_nothing_written(result, root: Path, port: int, cause: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "did not form within 3 s" in lines[0]
    assert cause in lines[0]
    assert not root.exists()  # no experiment folder, no log, no lock


def test_a_node_that_never_arrives_is_one_line_exit_2_nothing_written(tmp_path: Path) -> None:
    port = free_port()
    result, root, _ = lone_node(tmp_path, 0, port)
    assert_one_line_and_nothing_written(result, root, port, "not every node arrived")


@pytest.mark.slow
def test_no_host_or_a_port_in_use_is_one_line_exit_2(tmp_path: Path) -> None:
    port = free_port()  # nobody listens: node 1 finds no rendezvous host there
    result, root, _ = lone_node(tmp_path / "nohost", 1, port)
    assert_one_line_and_nothing_written(result, root, port, "")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result, root, _ = lone_node(tmp_path / "busy", 0, port)
    assert_one_line_and_nothing_written(result, root, port, "the port is in use on this host")
