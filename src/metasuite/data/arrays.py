"""Class-array files: one ``.npy`` or ``.npz`` per class (QuickDraw's numpy bitmaps).

Each file holds one class's images, ``[n, H, W]`` or flattened ``[n, H*W]`` (square
images, QuickDraw's ``[n, 784]``), uint8 (or bool) grayscale; the class is the file name
without its suffix. Files are memory-mapped and only the first ``max_images_per_class``
images of each are read, so a 100k-image class costs what the cap allows. The classes
are split by ratio, exactly like Omniglot's (``train_val_test_split``, ``val_seed``).
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from metasuite.data.images import convert_pixels
from metasuite.data.layouts import ARRAY_SUFFIXES, Listing
from metasuite.errors import DatasetError
from metasuite.progress import progress_bar


def _open_array(path: Path) -> np.ndarray:
    """The file's one array, memory-mapped when it is a .npy (never unpickled)."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if len(keys) != 1:
                raise DatasetError(
                    f"{path}: a class-array .npz must hold one array, it holds "
                    f"{len(keys)} ({', '.join(keys[:5]) or 'none'})"
                )
            return archive[keys[0]]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: cannot read the class array ({exc})") from None


def _as_images(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` as ``[n, H, W]`` uint8 (a view where possible)."""
    if array.ndim == 2:
        side = math.isqrt(array.shape[1])
        if side * side != array.shape[1]:
            raise DatasetError(
                f"{path}: shape {list(array.shape)} is [n, {array.shape[1]}], which is not "
                "[n, H*W] of square images; store [n, H, W] instead"
            )
        array = array.reshape(array.shape[0], side, side)
    elif array.ndim != 3:
        raise DatasetError(
            f"{path}: shape {list(array.shape)}; expected [n, H, W] or [n, H*W] grayscale images"
        )
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise DatasetError(
            f"{path}: images are {array.dtype}; expected uint8 (0-255) or bool bitmaps"
        )
    return array


def scan_arrays(root: Path, max_images_per_class: int | None) -> Listing:
    """List the class arrays directly in ``root`` (file names and sizes only)."""
    files = sorted(
        e.name
        for e in os.scandir(root)
        if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(ARRAY_SUFFIXES)
    )
    names = [os.path.splitext(f)[0] for f in files]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(
            f"{root}: class {duplicates[0]!r} has both a .npy and a .npz file; keep one"
        )
    order = sorted(range(len(names)), key=names.__getitem__)
    names = [names[i] for i in order]
    files = [files[i] for i in order]
    sizes = [(root / f).stat().st_size for f in files]

    def build(
        height: int, width: int, channels: int, workers: int, quiet: bool
    ) -> tuple[np.ndarray, list[int]]:
        parts: list[np.ndarray] = []
        first: tuple[str, tuple[int, ...]] | None = None
        for name in progress_bar(files, unit="class", desc=f"reading {root.name}", quiet=quiet):
            path = root / name
            images = _as_images(_open_array(path), path)
            # Every class is resized to the config's size, so a class stored at another
            # size would be silently rescaled: a data set holds one image size.
            if first is None:
                first = (name, images.shape[1:])
            elif images.shape[1:] != first[1]:
                raise DatasetError(
                    f"{path}: images of {images.shape[1]}x{images.shape[2]}, but "
                    f"{first[0]} holds {first[1][0]}x{first[1][1]}; every class array of a "
                    "data set must hold images of one size"
                )
            if max_images_per_class is not None:
                images = images[:max_images_per_class]
            parts.append(convert_pixels(np.asarray(images), height, width, channels))
        counts = [len(p) for p in parts]
        empty = np.empty((0, channels, height, width), dtype=np.uint8)
        return (np.concatenate(parts) if parts else empty), counts

    key = {"files": files, "sizes": sizes, "max_images_per_class": max_images_per_class}
    return Listing("arrays", root, names, key, False, build)


__all__ = ["scan_arrays"]
