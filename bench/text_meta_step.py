#!/usr/bin/env python3
"""Text twin of bench/meta_step.py: meta-iterations per second and peak memory of one
meta-step for the tiny BERT and the built-in text_conv encoder, first and second order.

WordNet glosses, 5-way 5-shot, 15 queries, batch 4, 5 inner steps, max_length 48 (the
text suite's settings, text/experiment_config/). Each variant runs in its own process
(one intra-op thread): a warm-up step, then the median of ``--repeats`` timed steps, and
the peak resident memory the steps add (VmHWM over all steps minus VmRSS before the
first, with the model and data loaded).
Writes bench/results/text_meta_step-<UTC>.json and prints a Markdown table.

    python3 bench/text_meta_step.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

VARIANTS = [
    (backbone, order) for backbone in ("text_conv", "tiny_bert") for order in ("first", "second")
]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(backbone: str, order: str, repeats: int) -> None:
    import torch

    from metasuite.config import load_config, replace
    from metasuite.data.tasks import FewShotTasks, train_indices
    from metasuite.learner.learners import build_learner
    from metasuite.training.runtime import seed_everything

    torch.set_num_threads(1)
    name = f"text_wordnet_{backbone}_{'maml++' if order == 'second' else 'fomaml'}_5way_5shot_s0"
    cfg = load_config(ROOT / "text" / "experiment_config" / f"{name}.json")
    cfg = replace(cfg, use_multi_step_loss_optimization=False)
    tasks = FewShotTasks.from_config(cfg, quiet=True)
    seed_everything(cfg.train_seed)
    system = build_learner(cfg, torch.device("cpu"))
    batches = [tasks.train.batch(train_indices(i, cfg.batch_size)) for i in range(repeats + 1)]
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to now
    before = _rss_kib("VmRSS")  # model and data loaded, no step taken yet
    system.train_step(batches[0], epoch=0)
    times = []
    for batch in batches[1:]:
        start = time.perf_counter()
        system.train_step(batch, epoch=0)
        times.append(time.perf_counter() - start)
    peak = (_rss_kib("VmHWM") - before) / 1024
    params = sum(p.numel() for p in system.meta_parameters())
    print(
        json.dumps(
            {"step_s": statistics.median(times), "peak_step_mib": peak, "parameters": params}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("BACKBONE", "ORDER"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.repeats)
        return
    rows = []
    for backbone, order in VARIANTS:
        out = (
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    backbone,
                    order,
                    "--repeats",
                    str(args.repeats),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        row = {"backbone": backbone, "order": order, **json.loads(out)}
        row["meta_its_per_s"] = 1 / row["step_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = ROOT / "bench" / "results" / f"text_meta_step-{stamp}.json"
    path.write_text(json.dumps({"repeats": args.repeats, "rows": rows}, indent=2) + "\n")
    print("| backbone | order | parameters | meta-it/s | s per meta-it | peak MiB per step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['backbone']} | {r['order']} | {r['parameters']:,} | "
            f"{r['meta_its_per_s']:.2f} | {r['step_s']:.2f} | {r['peak_step_mib']:.0f} |"
        )
    print(f"written {path}")


if __name__ == "__main__":
    main()
