"""Meta-iterations/s of data-parallel meta-training, 1 process vs N processes.

    python bench/distributed.py [--nprocs 1,2] [--way 5] [--filters 64] [--steps 5]
                                [--iters 8] [--device cpu|cuda] [--first-order]

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
import json
import os
import platform
import socket
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nprocs", default="1,2", help="process counts to compare")
    parser.add_argument("--way", type=int, default=5)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--iters", type=int, default=8, help="timed meta-iterations")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--first-order", action="store_true")
    args = parser.parse_args()
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
