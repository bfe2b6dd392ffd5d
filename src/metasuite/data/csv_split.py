"""The CSV split layout: ``images/`` plus ``train.csv``, ``val.csv``, ``test.csv``.

Ravi & Larochelle's mini-ImageNet split (and most copies of it online) lists each
split's images as ``filename,label`` rows (a ``filename,label`` header is optional);
the files live flat in ``images/``. The split is the files': class ``label`` of
``val.csv`` is class ``val/<label>``, so such a data set is always pre-split, whatever
``sets_are_pre_split`` says. Images are decoded exactly like an image folder's.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from metasuite.data.images import decode_images
from metasuite.data.layouts import CSV_FILES, Listing
from metasuite.errors import DatasetError

SPLIT_OF_FILE = {"train.csv": "train", "val.csv": "val", "test.csv": "test"}


def _read_rows(path: Path) -> list[tuple[int, str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read the split file ({exc})") from None
    out = []
    for number, row in enumerate(rows, start=1):
        if not row or (number == 1 and [c.strip().lower() for c in row] == ["filename", "label"]):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(
                f"{path}:{number}: expected a 'filename,label' row, got {','.join(row)!r}"
            )
        out.append((number, row[0].strip(), row[1].strip()))
    return out


def scan_csv(root: Path) -> Listing:
    """List a CSV split data set at ``root`` (image sizes are read, not the pixels)."""
    missing = [name for name in CSV_FILES if not (root / name).is_file()]
    if missing:
        raise DatasetError(
            f"{root}: CSV split layout (images/ + train.csv, val.csv, test.csv) but "
            f"{', '.join(missing)} missing"
        )
    images = root / "images"
    by_class: dict[str, list[tuple[str, int]]] = {}
    seen: dict[str, str] = {}
    for csv_name, split in SPLIT_OF_FILE.items():
        path = root / csv_name
        for number, filename, label in _read_rows(path):
            if filename.startswith(("/", "\\")) or ".." in filename.replace("\\", "/").split("/"):
                raise DatasetError(
                    f"{path}:{number}: file name {filename!r} must lie inside {images}"
                )
            where = f"{csv_name}:{number}"
            if filename in seen:
                raise DatasetError(
                    f"{path}:{number}: {filename!r} is listed twice (first in {seen[filename]})"
                )
            seen[filename] = where
            try:
                size = os.stat(images / filename).st_size
            except OSError:
                raise DatasetError(
                    f"{path}:{number}: image {images / filename} not found"
                ) from None
            by_class.setdefault(f"{split}/{label}", []).append((f"images/{filename}", size))
    if not by_class:
        raise DatasetError(f"{root}: train.csv, val.csv and test.csv list no images")
    names = sorted(by_class)
    files = [sorted(by_class[name]) for name in names]
    flat = [str(root / rel) for class_files in files for rel, _ in class_files]
    counts = [len(f) for f in files]

    def build(
        height: int, width: int, channels: int, workers: int, quiet: bool
    ) -> tuple[np.ndarray, list[int]]:
        pixels = decode_images(
            flat,
            height,
            width,
            channels,
            workers=workers,
            quiet=quiet,
            desc=f"decoding {root.name}",
        )
        return pixels, counts

    key = {
        "files": [[rel for rel, _ in f] for f in files],
        "sizes": [size for f in files for _, size in f],
    }
    return Listing("csv", root, names, key, True, build)


__all__ = ["scan_csv"]
