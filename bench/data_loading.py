"""Time the data path on the real Omniglot archive: unpack, first load, cached load, tasks.

    python bench/data_loading.py [--tarfile] [--workers N] [--size 28]

Works in a temporary data set root (the archive is copied there), so the repository's
datasets/ folder is left alone. Prints one line per measurement; numbers depend on the
machine (cores, disk) — report them with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from metasuite.config import REPO_ROOT, ExperimentConfig, replace
from metasuite.data.archive import pbzip2_available, unpack
from metasuite.data.tasks import FewShotTasks


def _timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{label:<44} {time.perf_counter() - start:8.2f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarfile", action="store_true", help="also time the tarfile fallback")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--size", type=int, default=28, help="image height and width")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, decode workers: {args.workers}, pbzip2: {pbzip2_available()}")
    with tempfile.TemporaryDirectory(prefix="metasuite-bench-") as tmp:
        root = Path(tmp)
        archive = Path(shutil.copy(REPO_ROOT / "datasets" / "omniglot.tar.bz2", root))
        if args.tarfile:
            folder = _timed(
                "unpack (tarfile)", lambda: unpack(archive, use_pbzip2=False, quiet=True)
            )
            shutil.rmtree(folder)
        if pbzip2_available():
            folder = _timed("unpack (tar -I pbzip2)", lambda: unpack(archive, quiet=True))
        config = replace(
            ExperimentConfig(),
            image_height=args.size,
            image_width=args.size,
            num_dataprovider_workers=args.workers,
        )
        _timed(
            "first load (scan + decode + write cache)",
            lambda: FewShotTasks.from_config(config, root, quiet=True),
        )
        tasks = _timed("cached load", lambda: FewShotTasks.from_config(config, root, quiet=True))
        print(f"classes per split: {tasks.class_counts}")
        for ways in (5, 20):
            sampler = FewShotTasks.from_config(
                replace(config, num_classes_per_set=ways), root, quiet=True
            ).train
            sampler.batch(range(8))
            start = time.perf_counter()
            for it in range(200):
                sampler.batch(range(it * 8, it * 8 + 8))
            per_batch = (time.perf_counter() - start) / 200 * 1000
            print(f"train batch of 8 {ways}-way 1-shot tasks          {per_batch:8.2f} ms")


if __name__ == "__main__":
    main()
