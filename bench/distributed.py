"""Meta-iterations/s of data-parallel meta-training, 1 process vs N processes.

    python bench/distributed.py [--nprocs 1,2] [--way 5] [--filters 64] [--steps 5]
                                [--iters 8] [--device cpu|cuda] [--first-order]
    python bench/distributed.py --nnodes 2 [--repeats 3] [--iters 4] [...]

``--nnodes 2`` measures whole ``metasuite train`` runs instead: one process (1 thread),
one node with ``--nproc 2``, and two node launchers meeting in a c10d rendezvous on
127.0.0.1 (1 process x 1 thread each), interleaved ``--repeats`` times. Each run trains
two epochs of ``--iters`` meta-iterations; the second epoch's wall time (its
meta-iterations and one validation batch of 8 tasks, no start-up, no warm-up) divided by
``--iters`` is the time per meta-iteration. The overhead of two nodes is their time per
meta-iteration against one process's, and against one node with the same two ranks.

Each setting runs in fresh processes (gloo on the CPU, NCCL on GPUs) joined exactly as
``metasuite train --nproc N`` joins them (metasuite.training.distributed's collectives and
learner wrapper), on the real Omniglot tasks, MAML++ settings (batch 8, 5 inner steps,
second order, MSL, per-step BN, LSLR). One warm-up meta-iteration, then ``--iters``
timed ones; the slowest rank's time counts. On the CPU, N processes get 1 thread each
and the single process is measured with 1 thread and with all cores, so the table
shows both "same threads per process" and "same machine". Writes JSON under
bench/results/ and prints a table. Numbers depend on the machine and its load (the CI
machine's 2 cores are shared): report them with the machine they came from.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from metasuite.config import ExperimentConfig, replace
from metasuite.training import distributed
from metasuite.training.distributed import DistContext

RESULTS = Path(__file__).resolve().parent / "results"


def make_config(args: argparse.Namespace) -> ExperimentConfig:
    return replace(
        ExperimentConfig(),
        source="bench/distributed.py",
        dataset_name="omniglot_dataset",
        dataset_path="omniglot_dataset",
        num_classes_per_set=args.way,
        num_samples_per_class=1,
        num_target_samples=1,
        batch_size=8,
        cnn_num_filters=args.filters,
        number_of_training_steps_per_iter=args.steps,
        number_of_evaluation_steps_per_iter=args.steps,
        second_order=not args.first_order,
        first_order_to_second_order_epoch=-1,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(
    rank: int, world: int, port: int, cfg: ExperimentConfig, iters: int, threads: int,
    device_name: str, out: str,
) -> None:  # fmt: skip
    from metasuite.data.tasks import FewShotTasks
    from metasuite.learner.system import MamlSystem
    from metasuite.training.signals import StopRequest

    torch.set_num_threads(threads)
    device = torch.device(device_name, rank) if device_name == "cuda" else torch.device("cpu")
    tasks = FewShotTasks.from_config(cfg, quiet=True)
    torch.manual_seed(cfg.train_seed)
    learner = MamlSystem(cfg, device)
    slots = list(range(rank, cfg.batch_size, world))
    comm = None
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        ctx = DistContext(rank, world, rank, world)
        comm = distributed.Collectives.init(ctx, device)
        learner = distributed.DistributedLearner(
            learner, comm, distributed.AgreedStop(StopRequest())
        )

    def step(it: int) -> None:
        batch = tasks.train.batch([it * cfg.batch_size + b for b in slots]).to(device)
        if comm is None:
            learner.train_step(batch, 0)
        else:
            learner.train_step(
                batch, 0, total_tasks=cfg.batch_size, sync_gradients=comm.all_reduce_sum_
            )

    step(0)  # warm-up
    if comm is not None:
        comm.barrier()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for it in range(1, iters + 1):
        step(it)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    Path(out).write_text(json.dumps({"rank": rank, "seconds": elapsed}))
    if comm is not None:
        comm.close()


def measure(cfg: ExperimentConfig, world: int, threads: int, args: argparse.Namespace) -> float:
    """Meta-iterations per second of ``world`` processes with ``threads`` threads each."""
    ctx = mp.get_context("spawn")
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"{r}.json") for r in range(world)]
        procs = [
            ctx.Process(
                target=_rank,
                args=(r, world, port, cfg, args.iters, threads, args.device, outs[r]),
            )
            for r in range(world)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            if p.exitcode != 0:
                raise SystemExit(f"a benchmark process failed (exit {p.exitcode})")
        slowest = max(json.loads(Path(o).read_text())["seconds"] for o in outs)
    return args.iters / slowest


def _node_config(args: argparse.Namespace, folder: Path) -> Path:
    settings = {
        "experiment_name": "bench_nodes",
        "dataset_name": "omniglot_dataset",
        "dataset_path": "omniglot_dataset",
        "num_classes_per_set": args.way,
        "num_samples_per_class": 1,
        "num_target_samples": 1,
        "batch_size": 8,
        "cnn_num_filters": args.filters,
        "number_of_training_steps_per_iter": args.steps,
        "number_of_evaluation_steps_per_iter": args.steps,
        "second_order": not args.first_order,
        "first_order_to_second_order_epoch": -1,
        "total_epochs": 2,
        "total_iter_per_epoch": args.iters,
        "num_evaluation_tasks": 8,
        "checkpoint_every_n_iters": 0,
        "max_models_to_save": 1,
    }
    path = folder / "bench_nodes.json"
    path.write_text(json.dumps(settings, indent=2))
    return path


def _train(config: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "metasuite", "train", "--config", str(config), "--gpus", "cpu",
        "--experiments-root", str(root), "--quiet", *extra,
    ]  # fmt: skip


def _second_epoch_seconds(root: Path) -> float:
    with open(root / "bench_nodes" / "summary_statistics.csv") as f:
        rows = list(csv.DictReader(f))
    return float(rows[1]["epoch_time_s"])


def _run_arm(arm: str, config: Path, root: Path) -> float:
    env = dict(os.environ, METASUITE_NUM_THREADS="1")
    if arm == "1 process":
        commands = [_train(config, root)]
    elif arm == "1 node x 2":
        commands = [_train(config, root, "--nproc", "2")]
    else:
        endpoint = f"127.0.0.1:{_free_port()}"
        commands = [
            _train(config, root, "--nnodes", "2", "--node-rank", str(r), "--rdzv-endpoint",
                   endpoint)
            for r in (0, 1)
        ]  # fmt: skip
    procs = [subprocess.Popen(c, env=env, stderr=subprocess.DEVNULL) for c in commands]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"{arm}: metasuite train failed (exit {codes})")
    return _second_epoch_seconds(root)


def node_main(args: argparse.Namespace) -> None:
    if args.nnodes != 2:
        raise SystemExit("--nnodes: only 2 (two launchers on this machine) is measured")
    arms = ("1 process", "1 node x 2", "2 nodes x 1")
    times: dict[str, list[float]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory() as tmp:
        config = _node_config(args, Path(tmp))
        for rep in range(args.repeats):
            order = arms if rep % 2 == 0 else arms[::-1]  # interleaved against load drift
            for arm in order:
                root = Path(tmp) / f"{arm.replace(' ', '_')}_{rep}"
                seconds = _run_arm(arm, config, root) / args.iters
                times[arm].append(seconds)
                print(f"repeat {rep + 1} {arm:>12}: {seconds:.3f} s/meta-iteration", flush=True)
    med = {a: statistics.median(t) for a, t in times.items()}
    print(f"\n{'':>12} {'median s/iter':>13} {'all':>30}")
    for a in arms:
        print(f"{a:>12} {med[a]:>13.3f} {' '.join(f'{t:.3f}' for t in times[a]):>30}")
    two = med["2 nodes x 1"]
    print(
        f"\n2 nodes x 1 vs 1 process: {two / med['1 process']:.2f}x time per meta-iteration; "
        f"vs 1 node x 2: {two / med['1 node x 2']:.2f}x"
    )
    RESULTS.mkdir(exist_ok=True)
    label = "first_order" if args.first_order else "second_order"
    out = RESULTS / f"distributed_nodes_cpu_{args.way}way_{args.filters}f_{label}.json"
    record = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "settings": vars(args),
        "seconds_per_iteration": times,
        "median": med,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nprocs", default="1,2", help="process counts to compare")
    parser.add_argument("--way", type=int, default=5)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--iters", type=int, default=8, help="timed meta-iterations")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument(
        "--nnodes", type=int, default=1, help="2: whole runs, two node launchers vs one"
    )
    parser.add_argument("--repeats", type=int, default=3, help="with --nnodes: interleaved runs")
    args = parser.parse_args()
    if args.nnodes > 1:
        node_main(args)
        return
    cfg = make_config(args)
    cores = os.cpu_count() or 1
    rows = []
    for world in (int(n) for n in args.nprocs.split(",")):
        thread_options = [1] if args.device == "cuda" else sorted({max(1, cores // world), 1})
        for threads in thread_options:
            rate = measure(cfg, world, threads, args)
            rows.append({"processes": world, "threads_per_process": threads, "iters_per_s": rate})
            print(
                f"{world} process(es) x {threads} thread(s) on {args.device}: "
                f"{rate:.3f} meta-iterations/s",
                flush=True,
            )
    base = next(
        (r["iters_per_s"] for r in rows if r["processes"] == 1 and r["threads_per_process"] == 1),
        None,
    )
    print(f"\n{'processes':>9} {'threads':>7} {'iters/s':>9} {'vs 1 process x 1 thread':>24}")
    for r in rows:
        ratio = f"{r['iters_per_s'] / base:.2f}x" if base else "-"
        cells = (r["processes"], r["threads_per_process"], f"{r['iters_per_s']:.3f}", ratio)
        print("{:>9} {:>7} {:>9} {:>24}".format(*cells))
    RESULTS.mkdir(exist_ok=True)
    label = "first_order" if args.first_order else "second_order"
    out = RESULTS / f"distributed_{args.device}_{args.way}way_{args.filters}f_{label}.json"
    record = {
        "machine": {
            "cpus": cores,
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "settings": vars(args),
        "results": rows,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
