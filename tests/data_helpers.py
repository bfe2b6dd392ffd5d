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


# ------------------------------------------------------------ the other layouts (issue 17)
def random_images(rng: np.random.Generator, n: int, size: tuple[int, int], rgb: bool) -> np.ndarray:
    """``n`` random uint8 images ``[n, H, W]`` (or ``[n, H, W, 3]``), ``size`` = (H, W)."""
    shape = (n, *size, 3) if rgb else (n, *size)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def csv_layout(
    root: Path, classes: dict[str, int], *, per_class: int = 6, size: int = 20, seed: int = 0
) -> int:
    """Ravi & Larochelle's layout: ``root/images/*.png`` and ``root/{split}.csv``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    count = 0
    for split, num_classes in classes.items():
        rows = ["filename,label"]
        for c in range(num_classes):
            label = f"n{split_code(split)}{c:07d}"
            for i, pixels in enumerate(random_images(rng, per_class, (size, size), rgb=True)):
                name = f"{label}{i:08d}.png"  # PNG: lossless, so pixels can be compared
                Image.fromarray(pixels, "RGB").save(root / "images" / name)
                rows.append(f"{name},{label}")
                count += 1
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return count


def class_arrays(
    root: Path,
    num_classes: int,
    *,
    per_class: int = 8,
    size: int = 28,
    flat: bool = True,
    npz_every: int = 3,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """QuickDraw style: ``root/<class>.npy`` of uint8 ``[n, size*size]`` (every
    ``npz_every``-th class as ``.npz``); returns the ``[n, H, W]`` arrays by class."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for c in range(num_classes):
        name = f"class_{c:03d}"
        images = random_images(rng, per_class + c % 3, (size, size), rgb=False)
        stored = images.reshape(len(images), -1) if flat else images
        if npz_every and c % npz_every == npz_every - 1:
            np.savez(root / f"{name}.npz", stored)
        else:
            np.save(root / f"{name}.npy", stored)
        arrays[name] = images
    return arrays


PICKLE_NAMES = {
    "train": "mini-imagenet-cache-train.pkl",
    "val": "mini-imagenet-cache-validation.pkl",
    "test": "mini-imagenet-cache-test.pkl",
}


def mini_imagenet_pickles(
    root: Path, classes: dict[str, int], *, per_class: int = 6, size: int = 20, seed: int = 0
) -> dict[str, dict]:
    """learn2learn's caches: ``{"image_data": uint8 [n, H, W, 3], "class_dict": {...}}``
    per split, classes interleaved in image_data (indexes, not ranges)."""
    import pickle

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    blobs = {}
    for split, num_classes in classes.items():
        total = num_classes * per_class
        images = random_images(rng, total, (size, size), rgb=True)
        order = rng.permutation(total)
        class_dict = {
            f"n{split_code(split)}{c:07d}": [int(i) for i in order[c::num_classes]]
            for c in range(num_classes)
        }
        blob = {"image_data": images, "class_dict": class_dict}
        with open(root / PICKLE_NAMES[split], "wb") as handle:
            pickle.dump(blob, handle, protocol=4)
        blobs[split] = blob
    return blobs


def pack(folder: Path, archive: Path) -> Path:
    """Pack ``folder`` (as its own top folder) into ``archive``, format by its name:
    .tar.bz2, .tar.gz, .tgz, .tar, .zip, or .<tar format>.zip (a zip holding the tar)."""
    import zipfile

    name = archive.name
    if name.endswith(".zip") and name[:-4].endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2")):
        inner = pack(folder, archive.parent / name[:-4])
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            zf.write(inner, inner.name)
        inner.unlink()
        return archive
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
        return archive
    mode = {".tar.bz2": "w:bz2", ".tar.gz": "w:gz", ".tgz": "w:gz", ".tar": "w"}
    suffix = next(s for s in mode if name.endswith(s))
    with tarfile.open(archive, mode[suffix]) as tar:
        tar.add(folder, arcname=folder.name)
    return archive
