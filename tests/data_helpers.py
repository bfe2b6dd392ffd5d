"""Small data sets for the data tests: subsets of the real Omniglot, random-JPEG trees."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def make_archive(archive: Path, folder: Path, arcname: str | None = None) -> Path:
    """Pack ``folder`` into ``archive`` (.tar.bz2) under ``arcname`` (default: its name)."""
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(folder, arcname=arcname or folder.name)
    return archive


def omniglot_subset(source: Path, dest: Path, *, alphabets: int = 2, characters: int = 3) -> int:
    """Copy a few real Omniglot characters, keeping the layout; returns the image count."""
    count = 0
    for part in ("images_background", "images_evaluation"):
        for alphabet in sorted((source / part).iterdir())[:alphabets]:
            for character in sorted(alphabet.iterdir())[:characters]:
                target = dest / part / alphabet.name / character.name
                shutil.copytree(character, target)
                count += len(list(target.iterdir()))
    return count


def random_jpeg_tree(
    root: Path,
    classes: dict[str, int],
    *,
    per_class: int = 6,
    size: tuple[int, int] = (40, 36),
    seed: int = 0,
) -> int:
    """``root/<split>/<wnid>/<wnid>_<i>.jpg`` random RGB JPEGs (mini-ImageNet layout)."""
    rng = np.random.default_rng(seed)
    count = 0
    for split, num_classes in classes.items():
        for c in range(num_classes):
            wnid = f"n{split_code(split)}{c:07d}"
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"{wnid}_{i:04d}.jpg", quality=90)
                count += 1
    return count


def split_code(split: str) -> int:
    return {"train": 1, "val": 2, "test": 3}[split]
