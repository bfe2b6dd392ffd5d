"""CPU seconds per training iteration and per evaluation task of each meta-learner.

    python bench/learner_step_cost.py [--ways 5 20] [--reps 10]
        [--methods maml++ protonet baseline baseline_pp] [--quiet]

Setting: the methods suite's Omniglot 1-shot configs (experiment_template_config/
methods.toml, seed 0), real Omniglot, one torch thread. The learners are timed
interleaved (one training iteration of each in turn, ``--reps`` times, on the same
meta-batches), so load from other processes hits them alike; reported are the median
wall and CPU (``time.process_time``) seconds per iteration, and per evaluation task
(a batch of ``batch_size`` validation tasks). CPU seconds are what a shared machine
cannot steal, so they turn one method's wall-clock budget into another's iterations
("what would ProtoNet reach in MAML++'s hour") better than wall time measured under
different loads.

Writes ``bench/results/learner_step_cost-<UTC time>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from metasuite.config import load_config
from metasuite.data.tasks import FewShotTasks
from metasuite.learner.learners import build_learner
from metasuite.progress import progress_bar

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "methods" / "experiment_config"


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(ways: int, methods: list[str], reps: int, quiet: bool) -> list[dict]:
    configs = {
        m: load_config(CONFIGS / f"methods_omniglot_{m}_{ways}way_1shot_s0.json") for m in methods
    }
    tasks = FewShotTasks.from_config(next(iter(configs.values())), quiet=True)
    learners = {m: build_learner(c, num_labels=tasks.train.num_labels) for m, c in configs.items()}
    size = next(iter(configs.values())).batch_size
    val = tasks.val.batch(range(size))
    times: dict[str, dict[str, list[float]]] = {
        m: {"train_wall": [], "train_cpu": [], "eval_wall": [], "eval_cpu": []} for m in methods
    }
    bar = progress_bar(total=reps * len(methods), desc=f"{ways}-way", quiet=quiet)
    for rep in range(reps + 1):  # rep 0 warms up and is not counted
        batch = tasks.train.batch(range(rep * size, (rep + 1) * size))
        for m, learner in learners.items():
            wall, cpu = timed(lambda: learner.train_step(batch, 0))  # noqa: B023
            ewall, ecpu = timed(lambda: learner.evaluate(val))  # noqa: B023
            if rep:
                times[m]["train_wall"].append(wall)
                times[m]["train_cpu"].append(cpu)
                times[m]["eval_wall"].append(ewall / size)
                times[m]["eval_cpu"].append(ecpu / size)
                bar.update(1)
    bar.close()
    return [
        {
            "ways": ways,
            "method": m,
            "backend": learners[m].backend,
            **{f"{k}_s_median": statistics.median(v) for k, v in times[m].items()},
        }
        for m in methods
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument(
        "--methods", nargs="+", default=["maml++", "protonet", "baseline", "baseline_pp"]
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = [row for ways in args.ways for row in measure(ways, args.methods, args.reps, args.quiet)]
    header = ("ways", "method", "train s/it", "(CPU)", "eval s/task", "(CPU)")
    print("{:>4} {:<12} {:>10} {:>7} {:>11} {:>7}".format(*header))
    for r in rows:
        print(
            f"{r['ways']:>4} {r['method']:<12} {r['train_wall_s_median']:>10.3f} "
            f"{r['train_cpu_s_median']:>7.3f} {r['eval_wall_s_median']:>11.4f} "
            f"{r['eval_cpu_s_median']:>7.4f}"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = REPO / "bench" / "results" / f"learner_step_cost-{stamp}.json"
    record = {
        "rows": rows,
        "reps": args.reps,
        "torch_threads": 1,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "command": " ".join([sys.executable, *sys.argv]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
