"""mini-ImageNet pickle caches, as learn2learn and Torchmeta-era scripts write them.

One pickle per split (``mini-imagenet-cache-train.pkl``, ``...-validation.pkl``,
``...-test.pkl``; the split is read from the file name), each a dict
``{"image_data": uint8 [n, 84, 84, 3], "class_dict": {class name: [image indexes]}}``.

Unpickling runs code named by the file, so these files are read with an unpickler that
knows only the few numpy functions that rebuild an array: any other global (``os.system``
in a hostile file, or an object of some library) stops the load with a
:class:`DatasetError` before it is called. The result must then have exactly that shape.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from metasuite.data.images import convert_pixels
from metasuite.data.layouts import PICKLE_SUFFIXES, Listing
from metasuite.errors import DatasetError
from metasuite.progress import progress_bar

SPLIT_WORDS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "validation"),
    "test": ("test",),
}
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    (module, name)
    for prefix in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{prefix}.multiarray", "_reconstruct"),
        (f"{prefix}.multiarray", "scalar"),
        (f"{prefix}.numeric", "_frombuffer"),
    )
) | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
"""What a pickled uint8 array and numpy integer indexes need, in numpy 1 and 2 (and
Python 2 pickles, whose byte strings come through ``_codecs.encode``)."""


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def safe_load(path: Path) -> Any:
    """Unpickle ``path`` allowing only plain containers, numbers, strings and arrays."""
    try:
        with open(path, "rb") as handle:
            return _ArrayUnpickler(io.BufferedReader(handle), encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise DatasetError(
            f"{path}: refused to unpickle: it calls {exc}, but a mini-ImageNet pickle holds "
            "only numpy arrays, dicts, lists, strings and numbers"
        ) from None
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, KeyError) as exc:
        raise DatasetError(
            f"{path}: cannot unpickle ({type(exc).__name__}: {exc}); the file looks "
            "corrupt or truncated"
        ) from None


def _split_of(name: str) -> str | None:
    lowered = os.path.splitext(name)[0].lower().replace("-", "_").replace(".", "_")
    words = set(lowered.split("_"))
    found = [split for split, options in SPLIT_WORDS.items() if words & set(options)]
    return found[0] if len(found) == 1 else None


def _checked(blob: Any, path: Path) -> tuple[np.ndarray, dict[str, list[int]]]:
    expected = 'expected {"image_data": uint8 [n, H, W, 3] array, "class_dict": {name: [indexes]}}'
    if not isinstance(blob, dict) or not {"image_data", "class_dict"} <= set(blob):
        keys = sorted(map(str, blob)) if isinstance(blob, dict) else type(blob).__name__
        raise DatasetError(f"{path}: holds {keys}; {expected}")
    images, classes = blob["image_data"], blob["class_dict"]
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[-1] not in (1, 3)
    ):
        what = (
            f"{images.dtype} {list(images.shape)}"
            if isinstance(images, np.ndarray)
            else type(images).__name__
        )
        raise DatasetError(f"{path}: image_data is {what}; {expected}")
    if not isinstance(classes, dict) or not classes:
        raise DatasetError(f"{path}: class_dict is empty or not a dict; {expected}")
    out: dict[str, list[int]] = {}
    for name, indexes in classes.items():
        try:
            rows = [int(i) for i in indexes]
        except (TypeError, ValueError):
            raise DatasetError(
                f"{path}: class_dict[{name!r}] is not a list of image indexes; {expected}"
            ) from None
        if not rows or min(rows) < 0 or max(rows) >= len(images):
            raise DatasetError(
                f"{path}: class_dict[{name!r}] has indexes outside image_data's "
                f"{len(images)} images (or none)"
            )
        out[str(name)] = rows
    return images, out


def scan_pickles(root: Path) -> Listing:
    """List the per-split pickles in ``root``; their classes are read when building."""
    files = sorted(
        e.name
        for e in os.scandir(root)
        if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(PICKLE_SUFFIXES)
    )
    by_split: dict[str, str] = {}
    for name in files:
        split = _split_of(name)
        if split is None:
            raise DatasetError(
                f"{root / name}: cannot tell the split from the file name; name the split "
                "pickles with train, val (or validation) and test"
            )
        if split in by_split:
            raise DatasetError(
                f"{root}: {by_split[split]} and {name} are both the {split} split; keep one"
            )
        by_split[split] = name
    missing = [s for s in SPLIT_WORDS if s not in by_split]
    if missing:
        raise DatasetError(
            f"{root}: mini-ImageNet pickles found ({', '.join(files)}) but none for the "
            f"{' and '.join(missing)} split"
        )
    ordered = [by_split[s] for s in SPLIT_WORDS]
    # Class names are inside the pickles; the listing names them once built. Until then
    # the fingerprint rests on the files themselves.
    sizes = [(root / f).stat().st_size for f in ordered]
    names_box: list[str] = []

    def build(
        height: int, width: int, channels: int, workers: int, quiet: bool
    ) -> tuple[np.ndarray, list[int]]:
        parts: list[np.ndarray] = []
        counts: list[int] = []
        names_box.clear()
        for split, file in progress_bar(
            zip(SPLIT_WORDS, ordered, strict=True),
            total=3,
            unit="split",
            desc=f"reading {root.name}",
            quiet=quiet,
        ):
            images, classes = _checked(safe_load(root / file), root / file)
            for name in sorted(classes):
                rows = np.asarray(classes[name], dtype=np.int64)
                parts.append(
                    convert_pixels(
                        images[rows].squeeze(-1) if images.shape[-1] == 1 else images[rows],
                        height,
                        width,
                        channels,
                    )
                )
                counts.append(len(rows))
                names_box.append(f"{split}/{name}")
        return np.concatenate(parts), counts

    key = {"files": ordered, "sizes": sizes}
    return Listing("pickles", root, names_box, key, True, build)


__all__ = ["safe_load", "scan_pickles"]
