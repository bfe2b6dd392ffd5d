#!/usr/bin/env python3
"""WordNet 5-way K-shot: each meta-learner after a fixed CPU budget vs the same network
adapted from its untrained initialisation, on the same 600 test tasks.

For each method the suite's config (text/experiment_config/, seed 0) is shortened to
``--iterations`` meta-iterations in one epoch and trained with ``metasuite train`` (a
subprocess, exactly what a user runs); its test accuracy (mean, 95% CI over the test
tasks) comes from test_summary.json. The baseline builds the same learner from the same
seed (its untrained initialisation) and runs its evaluation (the same inner loop, steps
and learning rates) on test tasks 0..599, with no meta-training. Writes JSON and prints
a Markdown table.

    python3 bench/text_wordnet.py --backbone text_conv --shot 5 --iterations 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from metasuite.config import load_config, replace, save_config  # noqa: E402
from metasuite.data.tasks import FewShotTasks  # noqa: E402
from metasuite.learner.learners import build_learner  # noqa: E402
from metasuite.stats import mean_ci95  # noqa: E402
from metasuite.training.runtime import seed_everything  # noqa: E402

METHODS = ("maml++", "anil", "fomaml", "reptile")


def untrained(config_path: Path, tasks: int) -> tuple[float, float, float]:
    torch.set_num_threads(int(os.environ.get("METASUITE_NUM_THREADS", "1")))
    cfg = replace(load_config(config_path), num_evaluation_tasks=tasks)
    test = FewShotTasks.from_config(cfg, quiet=True).test
    seed_everything(cfg.train_seed)
    learner = build_learner(cfg, torch.device("cpu"))
    start, accs = time.perf_counter(), []
    for first in range(0, tasks, cfg.batch_size):
        result = learner.evaluate(test.batch(range(first, min(tasks, first + cfg.batch_size))))
        accs += [float(a) for a in result.task_accuracy.reshape(-1)]
    mean, ci = mean_ci95(accs)
    return mean, ci, time.perf_counter() - start


def trained(config_path: Path, out: Path, iterations: int, tasks: int) -> dict[str, float]:
    cfg = replace(
        load_config(config_path),
        total_epochs=1,
        total_epochs_before_pause=1,
        total_iter_per_epoch=iterations,
        num_evaluation_tasks=tasks,
        checkpoint_every_n_iters=0,
    )
    short = out / "configs" / config_path.name
    short.parent.mkdir(parents=True, exist_ok=True)
    save_config(cfg, short)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "metasuite",
            "train",
            "--config",
            str(short),
            "--gpus",
            "cpu",
            "--experiments-root",
            str(out / "experiments"),
            "--quiet",
        ],
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    wall = time.perf_counter() - start
    summary = json.loads(
        (out / "experiments" / cfg.experiment_name / "test_summary.json").read_text()
    )["best_single"]
    return {"mean": summary["accuracy_mean"], "ci95": summary["accuracy_ci95"], "wall_s": wall}


def plot(record: dict, path: Path) -> None:
    """Bars: untrained initialisation vs meta-trained, per method, with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["rows"]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for offset, key, label in (
        (-0.2, "untrained", "untrained init"),
        (0.2, "trained", "meta-trained"),
    ):
        ax.bar(
            [i + offset for i in x],
            [100 * r[f"{key}_mean"] for r in rows],
            width=0.4,
            yerr=[100 * r[f"{key}_ci95"] for r in rows],
            capsize=3,
            label=label,
        )
    ax.axhline(100 / 5, color="grey", linestyle=":", label="chance (5-way)")
    ax.set_xticks(list(x), [r["method"] for r in rows])
    ax.set_ylabel(f"test accuracy % ({record['tasks']} tasks, 95% CI)")
    ax.set_title(
        f"WordNet glosses 5-way {record['shot']}-shot, {record['backbone']}, "
        f"{record['iterations']} meta-iterations"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="text_conv", choices=["text_conv", "tiny_bert"])
    parser.add_argument("--shot", type=int, default=5, choices=[1, 5])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "text_wordnet")
    parser.add_argument("--plot", type=Path, help="also draw the table as this PNG")
    parser.add_argument("--plot-only", type=Path, metavar="JSON", help="only draw a saved run")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(args.plot_only.read_text()), args.plot)
        return
    rows = []
    for method in args.methods:
        name = f"text_wordnet_{args.backbone}_{method}_5way_{args.shot}shot_s0.json"
        path = ROOT / "text" / "experiment_config" / name
        base, base_ci, base_s = untrained(path, args.tasks)
        run = trained(path, args.out, args.iterations, args.tasks)
        rows.append(
            {
                "method": method,
                "untrained_mean": base,
                "untrained_ci95": base_ci,
                "untrained_eval_s": base_s,
                **{f"trained_{k}": v for k, v in run.items()},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    record = {
        "backbone": args.backbone,
        "shot": args.shot,
        "iterations": args.iterations,
        "tasks": args.tasks,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.backbone}_{args.shot}shot.json").write_text(json.dumps(record, indent=2))
    if args.plot:
        plot(record, args.plot)
    print(f"| method | untrained init | after {args.iterations} meta-iterations | train+test s |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {100 * r['untrained_mean']:.2f} ± {100 * r['untrained_ci95']:.2f}"
            f" | {100 * r['trained_mean']:.2f} ± {100 * r['trained_ci95']:.2f} "
            f"| {r['trained_wall_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
