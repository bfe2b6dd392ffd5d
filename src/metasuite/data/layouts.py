"""Which layout a data set folder has, and the common shape every layout is listed in.

Layouts (:data:`LAYOUTS`), tried in this order, because the later ones also match the
earlier ones' folders (a CSV layout's ``images/`` folder is an image folder too):

- ``pickles``: mini-ImageNet pickle caches, one ``*.pkl`` per split (learn2learn's
  ``mini-imagenet-cache-{train,validation,test}.pkl``);
- ``csv``: ``images/`` plus ``train.csv``, ``val.csv``, ``test.csv`` of
  ``filename,label`` rows (Ravi & Larochelle's split);
- ``arrays``: one ``.npy``/``.npz`` per class (QuickDraw's numpy bitmaps);
- ``folders``: image files in class folders (Omniglot, mini-ImageNet as folders).

A layout's scanner is cheap (names and file sizes, no pixels) and returns a
:class:`Listing`: what the cache fingerprint is made of, and how to build the pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metasuite.data.images import IMAGE_SUFFIXES
from metasuite.errors import DatasetError

LAYOUTS: dict[str, str] = {
    "pickles": "mini-ImageNet pickles: one *train*/*val*/*test* .pkl file per split",
    "csv": "images/ plus train.csv, val.csv, test.csv with filename,label rows",
    "arrays": "class arrays: one .npy or .npz per class of shape [n, H, W] or [n, H*W]",
    "folders": "image folders: <class>/<image>.png|.jpg|.jpeg",
}
PICKLE_SUFFIXES = (".pkl", ".pickle")
ARRAY_SUFFIXES = (".npy", ".npz")
CSV_FILES = ("train.csv", "val.csv", "test.csv")


@dataclass(frozen=True)
class Listing:
    """A data set as found on disk, before any pixels are read.

    ``names`` are the class keys, sorted; with ``pre_split`` each starts with
    ``train/``, ``val/`` or ``test/``. ``key`` goes into the cache fingerprint (with the
    image settings), so it must change whenever the pixels would. ``build(height,
    width, channels, workers, quiet)`` returns uint8 ``[n, C, H, W]`` grouped by class in
    ``names`` order, and the image count of each class. Where the class names are inside
    the data files (pickles), ``names`` is empty until ``build`` fills it; a matching
    cache supplies them instead.
    """

    layout: str
    root: Path
    names: list[str]
    key: dict[str, Any]
    pre_split: bool
    build: Callable[[int, int, int, int, bool], tuple[np.ndarray, list[int]]]
    notes: tuple[str, ...] = field(default=())


def _visible(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _layout_here(folder: Path) -> str | None:
    entries = _visible(folder)
    names = {e.name for e in entries if e.is_file()}
    if any(n.lower().endswith(PICKLE_SUFFIXES) for n in names):
        return "pickles"
    if any(n in names for n in CSV_FILES) and (folder / "images").is_dir():
        return "csv"
    if any(n.lower().endswith(ARRAY_SUFFIXES) for n in names):
        return "arrays"
    return None


def _has_images(folder: Path) -> bool:
    for _, _, files in os.walk(folder):
        if any(os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES for f in files):
            return True
    return False


def detect_layout(folder: Path) -> tuple[str, Path]:
    """(layout name, the folder its files are in).

    Pickles, CSV files and arrays may sit one or two wrapper folders down (an archive
    unpacked by hand keeps its top folder); image folders are scanned from ``folder``
    itself, so their class keys and cache fingerprint do not move. Raises
    :class:`DatasetError` naming every layout when none matches.
    """
    here = folder
    for _ in range(3):
        layout = _layout_here(here)
        if layout is not None:
            return layout, here
        entries = _visible(here)
        if len(entries) != 1 or not entries[0].is_dir():
            break
        here = Path(entries[0].path)
    if _has_images(folder):
        return "folders", folder
    raise DatasetError(
        f"{folder}: no images found and no data set layout recognised; expected one of: "
        + "; ".join(f"{name} ({text})" for name, text in LAYOUTS.items())
    )


__all__ = ["LAYOUTS", "Listing", "detect_layout"]
