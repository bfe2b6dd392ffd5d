"""Time the data path: the real Omniglot archive, and each other layout and archive format.

    python bench/data_loading.py [--tarfile] [--workers N] [--size 28]
    python bench/data_loading.py --formats [--images 2000]   # the other layouts only

Omniglot: unpack, first load, cached load, task batches. ``--formats`` (also run after
the Omniglot part unless ``--omniglot-only``): for each layout (CSV split of 84x84 JPEGs,
QuickDraw-style class arrays of 28x28, mini-ImageNet pickles of 84x84x3) a generated data
set of ``--images`` random images is unpacked from an archive (.zip, .tar.gz, .tar.gz.zip)
and loaded twice, first load (scan + decode + write cache) and cached load, reported
per 1,000 images.

Works in a temporary data set root (the archive is copied there), so the repository's
datasets/ folder is left alone. Prints one line per measurement; numbers depend on the
machine (cores, disk) — report them with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from metasuite.config import REPO_ROOT, ExperimentConfig, replace
from metasuite.data.archive import pbzip2_available, unpack
from metasuite.data.tasks import FewShotTasks

SPLITS = ("train", "val", "test")


def _timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{label:<44} {time.perf_counter() - start:8.2f} s", flush=True)
    return result


def _classes(images: int, per_class: int) -> list[tuple[str, str]]:
    """(split, class name) for ``images // per_class`` classes, dealt over the splits."""
    count = max(15, images // per_class)
    return [(SPLITS[c % 3], f"n{c:08d}") for c in range(count)]


def _make_csv(folder: Path, images: int, rng: np.random.Generator) -> int:
    (folder / "images").mkdir(parents=True)
    rows: dict[str, list[str]] = {s: [] for s in SPLITS}
    per_class = 20
    for split, name in _classes(images, per_class):
        for i in range(per_class):
            file = f"{name}{i:08d}.jpg"
            pixels = rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "images" / file, quality=90)
            rows[split].append(f"{file},{name}")
    for split, lines in rows.items():
        (folder / f"{split}.csv").write_text("filename,label\n" + "\n".join(lines) + "\n")
    return sum(len(v) for v in rows.values())


def _make_arrays(folder: Path, images: int, rng: np.random.Generator) -> int:
    folder.mkdir(parents=True)
    per_class = 100
    classes = _classes(images, per_class)
    for _, name in classes:
        np.save(folder / f"{name}.npy", rng.integers(0, 256, (per_class, 784), dtype=np.uint8))
    return len(classes) * per_class


def _make_pickles(folder: Path, images: int, rng: np.random.Generator) -> int:
    folder.mkdir(parents=True)
    per_class = 20
    total = 0
    names = {"train": "train", "val": "validation", "test": "test"}
    for split in SPLITS:
        classes = [n for s, n in _classes(images, per_class) if s == split]
        data = rng.integers(0, 256, (len(classes) * per_class, 84, 84, 3), dtype=np.uint8)
        index = {n: list(range(i * per_class, (i + 1) * per_class)) for i, n in enumerate(classes)}
        with open(folder / f"mini-imagenet-cache-{names[split]}.pkl", "wb") as handle:
            pickle.dump({"image_data": data, "class_dict": index}, handle, protocol=4)
        total += len(data)
    return total


def _pack(folder: Path, archive: Path) -> None:
    if archive.name.endswith(".tar.gz.zip"):
        inner = archive.with_name(archive.name.removesuffix(".zip"))
        _pack(folder, inner)
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(inner, inner.name)
        inner.unlink()
    elif archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    else:
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(folder, arcname=folder.name)


FORMATS = {
    # layout: (maker, archive ending, image size HxWxC)
    "csv (84x84 JPEG)": (_make_csv, ".zip", (84, 84, 3)),
    "arrays (28x28 .npy)": (_make_arrays, ".tar.gz", (28, 28, 1)),
    "pickles (84x84x3)": (_make_pickles, ".tar.gz.zip", (84, 84, 3)),
}


def bench_formats(images: int, workers: int) -> None:
    rng = np.random.default_rng(0)
    for label, (make, suffix, (height, width, channels)) in FORMATS.items():
        with tempfile.TemporaryDirectory(prefix="metasuite-bench-") as tmp:
            root = Path(tmp)
            count = make(root / "src" / "packed", images, rng)
            _pack(root / "src" / "packed", root / f"data{suffix}")
            shutil.rmtree(root / "src")
            config = replace(
                ExperimentConfig(),
                dataset_name="data",
                dataset_path="data",
                image_height=height,
                image_width=width,
                image_channels=channels,
                num_dataprovider_workers=workers,
                train_val_test_split=[0.6, 0.2, 0.2],
                num_stages=2,
                num_classes_per_set=3,
            )
            start = time.perf_counter()
            unpack(root / f"data{suffix}", quiet=True)
            unpacked = time.perf_counter() - start
            start = time.perf_counter()
            FewShotTasks.from_config(config, root, quiet=True)
            first = time.perf_counter() - start
            start = time.perf_counter()
            FewShotTasks.from_config(config, root, quiet=True)
            cached = time.perf_counter() - start
            per = 1000 / count
            print(
                f"{label:<22} {count:>6} images from {suffix:<12} unpack {unpacked * per:6.3f} s, "
                f"first load {first * per:6.3f} s, cached load {cached * per:6.3f} s "
                "per 1,000 images",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarfile", action="store_true", help="also time the tarfile fallback")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--size", type=int, default=28, help="image height and width")
    parser.add_argument("--formats", action="store_true", help="only the other layouts")
    parser.add_argument("--omniglot-only", action="store_true", help="skip the other layouts")
    parser.add_argument("--images", type=int, default=2000, help="images per generated data set")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, decode workers: {args.workers}, pbzip2: {pbzip2_available()}")
    if not args.formats:
        bench_omniglot(args)
    if not args.omniglot_only:
        bench_formats(args.images, args.workers)


def bench_omniglot(args: argparse.Namespace) -> None:
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
