"""What a checkpoint costs for the paper's learners: file size, save and load time.

    python bench/checkpoint_cost.py [--repeats 5]

Builds the MAML++ learner of the reference Omniglot (64 filters, 28x28x1) and
mini-ImageNet (48 filters, 84x84x3) configs, takes a few Adam steps' worth of state
shape (optimizer moments included) and times ``CheckpointStore.save`` (encode, write,
fsync, rename) and ``load_checkpoint`` (read, checksum, two ``torch.load``) in a
temporary folder. No data set is needed. Numbers depend on the machine and its disk;
report them with the machine they came from.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from metasuite.config import ExperimentConfig, replace
from metasuite.learner.system import MamlSystem
from metasuite.training.builder import Builder, Progress
from metasuite.training.checkpoint import CheckpointStore, load_checkpoint
from metasuite.training.experiment_dir import ExperimentDir

CONFIGS = {
    "omniglot 64 filters 28x28x1": {},
    "mini-imagenet 48 filters 84x84x3": {
        "cnn_num_filters": 48,
        "image_height": 84,
        "image_width": 84,
        "image_channels": 3,
        "dataset_name": "mini_imagenet_full_size",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for label, changes in CONFIGS.items():
        cfg = replace(ExperimentConfig(), source="bench", **changes)
        learner = MamlSystem(cfg, "cpu")
        for group in learner.optimizer.param_groups:  # give Adam its moment buffers
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        learner.optimizer.step()
        with tempfile.TemporaryDirectory() as tmp:
            exp = ExperimentDir(Path(tmp) / "e")
            exp.create()
            builder = Builder(cfg, learner, None, exp, device=torch.device("cpu"), quiet=True)  # type: ignore[arg-type]
            builder.progress = Progress(
                epoch=50, iteration=25_000, train_losses=[1.0] * 499, train_accuracies=[0.5] * 499
            )
            store = CheckpointStore(exp.checkpoints)
            saves, loads = [], []
            for i in range(args.repeats):
                start = time.perf_counter()
                path = store.save(builder.checkpoint_payload("iteration"), i, None)
                saves.append(time.perf_counter() - start)
                start = time.perf_counter()
                load_checkpoint(path)
                loads.append(time.perf_counter() - start)
            size = path.stat().st_size / 2**20
        print(
            f"{label:<36} {size:6.2f} MiB  save {statistics.median(saves) * 1e3:7.1f} ms  "
            f"load {statistics.median(loads) * 1e3:7.1f} ms  (median of {args.repeats})",
            flush=True,
        )


if __name__ == "__main__":
    main()
