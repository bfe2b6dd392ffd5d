"""Data set folders → one uint8 image tensor per split, cached beside the data.

Every layout (:mod:`metasuite.data.layouts`: image folders, the CSV split, class arrays,
mini-ImageNet pickles) is listed cheaply, then built into the same cache; the split is
computed from the cached classes. This module describes image folders; the others have
their own modules.

A class is named by the folders at ``indexes_of_folders_indicating_class`` in each image
path (Omniglot: ``<alphabet>/<character>`` with ``[-3, -2]``). Images are decoded once
with pillow, resized, and the whole data set (every class, split settings aside) is kept
in a cache file beside the data folder::

    <data folder>.<H>x<W>x<C>.<fingerprint>.cache.pt

The fingerprint hashes what changes the cached pixels: the image file list (relative
paths and sizes), the size, the channels, the resize filter and the class folders. The
split is computed from the cached classes each time (it is cheap), so changing
``val_seed`` or ``train_val_test_split`` does not decode again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import torch

from metasuite import jsontext
from metasuite.config import ExperimentConfig, dataset_root, resolve_dataset_path
from metasuite.data.archive import (
    ARCHIVE_SUFFIX,
    ARCHIVE_SUFFIXES,
    KNOWN_FILE_COUNTS,
    UNPACKED_RECORD,
    unpack,
)
from metasuite.data.arrays import scan_arrays
from metasuite.data.csv_split import scan_csv
from metasuite.data.images import IMAGE_SUFFIXES, RESAMPLE_NAME, decode_images
from metasuite.data.layouts import Listing, detect_layout
from metasuite.data.pickles import scan_pickles
from metasuite.errors import ConfigError, DatasetError, DiskFullError
from metasuite.fsutil import NotWritableError, write_with_atomic

SPLITS: tuple[str, ...] = ("train", "val", "test")
CACHE_FORMAT = 1
CACHE_SUFFIX = ".cache.pt"

# Folder names the reference configs use interchangeably for the same data set.
FOLDER_ALIASES: dict[str, tuple[str, ...]] = {
    "omniglot": ("omniglot_dataset",),
    "omniglot_dataset": ("omniglot",),
    "mini_imagenet": ("mini_imagenet_full_size",),
    "mini_imagenet_full_size": ("mini_imagenet",),
}


HOW_TO_GET: dict[str, str] = {
    "wordnet_glosses": "it ships in the repository as datasets/wordnet_glosses.tar.bz2 "
    "(git checkout -- datasets/wordnet_glosses.tar.bz2), or rebuild it: apt-get install -y "
    "wordnet-base && python3 utils/build_wordnet_glosses.py",
}
"""Where a missing data set comes from, by dataset_name (added to the not-found line)."""


@dataclass(frozen=True)
class SplitData:
    """The images of one split, grouped by class.

    Class ``c`` owns ``images[class_offsets[c]:class_offsets[c + 1]]``; ``class_names[c]``
    is its folder key (e.g. ``"Tifinagh/character50"``).
    """

    images: torch.Tensor  # uint8 [num_images, C, H, W]
    class_offsets: torch.Tensor  # int64 [num_classes + 1]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    def class_sizes(self) -> torch.Tensor:
        return self.class_offsets[1:] - self.class_offsets[:-1]


@dataclass(frozen=True)
class DataSource:
    """Where a data set was found: its folder, and the archive it comes from (if any)."""

    folder: Path
    archive: Path | None


def _unique(items: list[Path]) -> list[Path]:
    return list(dict.fromkeys(items))


def _folder_candidates(config: ExperimentConfig, root: Path) -> list[Path]:
    primary = resolve_dataset_path(config, root)
    names = [primary.name, *FOLDER_ALIASES.get(primary.name, ())]
    return _unique([primary.parent / name for name in names])


def _archive_candidates(config: ExperimentConfig, folders: list[Path]) -> list[Path]:
    # Only beside the expected folder: an archive elsewhere could never unpack into it.
    # Every format of the folder's own names comes before the dataset_name fallbacks.
    return _unique(
        [
            stem.parent / (stem.name + suffix)
            for stems in (folders, _name_stems(config, folders))
            for suffix in ARCHIVE_SUFFIXES
            for stem in stems
        ]
    )


def _name_stems(config: ExperimentConfig, folders: list[Path]) -> list[Path]:
    names = (config.dataset_name, *FOLDER_ALIASES.get(config.dataset_name, ()))
    return [folders[0].parent / name for name in names]


def find_archive(config: ExperimentConfig, root: Path | None = None) -> Path | None:
    """The archive the data set comes from (the one :func:`locate_dataset` would unpack),
    or None; nothing is unpacked. For reproducibility records."""
    root = (root or dataset_root()).resolve()
    archives = _archive_candidates(config, _folder_candidates(config, root))
    return next((a for a in archives if a.is_file()), None)


def locate_dataset(
    config: ExperimentConfig, root: Path | None = None, *, quiet: bool = False
) -> DataSource:
    """Find the data set folder, unpacking its archive on first use.

    Looks for ``dataset_path`` (and its aliases, e.g. ``omniglot`` ↔ ``omniglot_dataset``)
    under the data set root, then for ``<dataset_path>`` or ``<dataset_name>`` with any
    archive ending (:data:`~metasuite.data.archive.ARCHIVE_SUFFIXES`, ``.tar.bz2``
    first). Raises :class:`DatasetError` saying where it looked.
    """
    root = (root or dataset_root()).resolve()
    folders = _folder_candidates(config, root)
    if root.is_relative_to(folders[0]):
        # "", "." or "datasets" would make every data set in the root one big data set.
        raise DatasetError(
            f"dataset_path {config.dataset_path!r} names {folders[0]}, which holds the data "
            f"set root {root} itself; name one data set's folder, e.g. 'omniglot_dataset'"
        )
    archives = _archive_candidates(config, folders)
    archive = next((a for a in archives if a.is_file()), None)
    for folder in folders:
        if folder.is_dir():
            return DataSource(folder, archive)
    if archive is None:
        stems = _unique([*folders, *_name_stems(config, folders)])
        others = ", ".join(s for s in ARCHIVE_SUFFIXES if s != ARCHIVE_SUFFIX)
        raise DatasetError(
            f"data set {config.dataset_name!r} not found: no folder "
            f"{' or '.join(str(f) for f in folders)} and no archive "
            f"{' or '.join(f'{a}{ARCHIVE_SUFFIX}' for a in stems)} (or {others}) "
            f"(dataset_path={config.dataset_path!r}, "
            f"data set root {root}; set DATASET_DIR or dataset_path)"
            + (f"; {HOW_TO_GET[config.dataset_name]}" if config.dataset_name in HOW_TO_GET else "")
        )
    _refuse_archive_of_another_folder(config, archive, folders)
    names = [f.name for f in folders if f.parent == archive.parent]
    folder = unpack(archive, existing_names=names, quiet=quiet)
    if folder not in folders:
        raise DatasetError(
            f"{archive}: unpacked to {folder}, but dataset_path {config.dataset_path!r} "
            f"expects {' or '.join(str(f) for f in folders)}"
        )
    return DataSource(folder, archive)


def _archive_top_folder(archive: Path) -> str | None:
    """The top folder of the archive's first member (reads one bzip2 block), or None.

    Only ``.tar.bz2`` archives unpack to their top folder's name; the others unpack to
    their own name, which is the expected folder's."""
    if not archive.name.endswith(ARCHIVE_SUFFIX):
        return None
    try:
        with tarfile.open(archive, "r:bz2") as tar:
            member = tar.next()
    except (tarfile.TarError, EOFError, OSError):
        return None  # unpack() reports a damaged archive properly
    if member is None:
        return None
    parts = [p for p in PurePosixPath(member.name).parts if p not in (".", "/")]
    return parts[0] if len(parts) > 1 or member.isdir() else None


def _refuse_archive_of_another_folder(
    config: ExperimentConfig, archive: Path, folders: list[Path]
) -> None:
    """A ``dataset_path`` typo falls back to the ``dataset_name`` archive, whose folder
    is usually unpacked already: say so at once rather than unpack the whole archive
    (minutes) only to find its folder taken."""
    top = _archive_top_folder(archive)
    if top is None:
        return
    existing = archive.parent / top
    if existing.is_dir() and existing not in folders:
        raise DatasetError(
            f"dataset_path {config.dataset_path!r}: no folder "
            f"{' or '.join(str(f) for f in folders)}, but {archive} is unpacked already, "
            f"in {existing}; set dataset_path to {top!r}"
        )


# --------------------------------------------------------------------------- scanning
def _class_key(parts: tuple[str, ...], indexes: tuple[int, ...], folder: Path) -> str:
    try:
        return "/".join(parts[i] for i in indexes)
    except IndexError:
        raise DatasetError(
            f"{folder / '/'.join(parts)}: image is only {len(parts) - 1} folder(s) deep in "
            f"the data set folder, but indexes_of_folders_indicating_class "
            f"{list(indexes)} needs {max(-i for i in indexes) - 1}"
        ) from None


def scan_images(
    folder: Path, indexes: tuple[int, ...]
) -> tuple[list[str], list[list[str]], list[int]]:
    """Classes (sorted keys), their image paths (relative, sorted) and file sizes in bytes.

    Hidden files and folders (``._x.png`` from macOS, our own temporary folders) are
    skipped, so they never become images or classes.
    """
    by_class: dict[str, list[tuple[str, int]]] = {}
    pending: list[tuple[str, tuple[str, ...]]] = [(str(folder), ())]
    while pending:  # os.scandir and plain strings: pathlib is 5x slower on 32k files
        path, rel_parts = pending.pop()
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    pending.append((entry.path, (*rel_parts, entry.name)))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    parts = (*rel_parts, entry.name)
                    key = _class_key(parts, indexes, folder)
                    by_class.setdefault(key, []).append(("/".join(parts), entry.stat().st_size))
    if not by_class:
        raise DatasetError(f"{folder}: no images (.png, .jpg, .jpeg) found in the data set folder")
    names = sorted(by_class)
    files: list[list[str]] = []
    sizes: list[int] = []
    for name in names:
        entries = sorted(by_class[name])
        files.append([rel for rel, _ in entries])
        sizes.extend(size for _, size in entries)
    return names, files, sizes


def _scan_folder_tree(config: ExperimentConfig, folder: Path) -> Listing:
    indexes = config.indexes_of_folders_indicating_class
    names, files, sizes = scan_images(folder, indexes)
    flat = [str(folder / rel) for class_files in files for rel in class_files]
    counts = [len(f) for f in files]

    def build(
        height: int, width: int, channels: int, workers: int, quiet: bool
    ) -> tuple[np.ndarray, list[int]]:
        pixels = decode_images(
            flat, height, width, channels, workers=workers, quiet=quiet,
            desc=f"decoding {folder.name}",
        )  # fmt: skip
        return pixels, counts

    key = {"indexes": list(indexes), "files": files, "sizes": sizes}
    return Listing("folders", folder, names, key, config.sets_are_pre_split, build)


def list_dataset(config: ExperimentConfig, folder: Path) -> Listing:
    """Detect the layout of the data set ``folder`` and list it (no pixels read).

    Keys that do not apply to a layout are ignored: ``indexes_of_folders_indicating_class``
    outside image folders, ``sets_are_pre_split`` for the CSV layout and pickles (always
    pre-split) and class arrays (always split by ratio), ``max_images_per_class`` outside
    class arrays.
    """
    layout, where = detect_layout(folder)
    if layout == "pickles":
        return scan_pickles(where)
    if layout == "csv":
        return scan_csv(where)
    if layout == "arrays":
        return scan_arrays(where, config.max_images_per_class)
    return _scan_folder_tree(config, folder)


# --------------------------------------------------------------------------- cache
def _fingerprint(config: ExperimentConfig, listing: Listing) -> str:
    if listing.layout == "folders":  # the original key, so existing caches stay valid
        key = {
            "format": CACHE_FORMAT,
            "height": config.image_height,
            "width": config.image_width,
            "channels": config.image_channels,
            "resample": RESAMPLE_NAME,
            "indexes": listing.key["indexes"],
            "classes": listing.names,
            "files": listing.key["files"],
            "sizes": listing.key["sizes"],
        }
    else:
        key = {
            "format": CACHE_FORMAT,
            "layout": listing.layout,
            "height": config.image_height,
            "width": config.image_width,
            "channels": config.image_channels,
            "resample": RESAMPLE_NAME,
            "classes": listing.names,
            **listing.key,
        }
    return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()


def cache_path(folder: Path, config: ExperimentConfig, fingerprint: str) -> Path:
    size = f"{config.image_height}x{config.image_width}x{config.image_channels}"
    return folder.parent / f"{folder.name}.{size}.{fingerprint[:16]}{CACHE_SUFFIX}"


def _load_cache(
    path: Path, fingerprint: str, names: list[str], shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor, list[str]] | None:
    """The cached (images, class_offsets, class_names), or None (with a warning) if
    unusable. Empty ``names`` (classes known only from the data files) take the cache's."""
    try:
        blob = torch.load(path, weights_only=True, mmap=True)
        images, offsets = blob["images"], blob["class_offsets"]
        cached_names = list(blob.get("class_names", ()))
        names = names or cached_names
        problem = None
        if blob.get("format") != CACHE_FORMAT or blob.get("fingerprint") != fingerprint:
            problem = "it was built from different files or settings"
        elif cached_names != names or not names:
            problem = "its classes differ from the data folder"
        elif images.dtype != torch.uint8 or tuple(images.shape[1:]) != shape:
            problem = f"its images are {images.dtype} {tuple(images.shape)}"
        elif offsets.dtype != torch.int64 or offsets.shape != (len(names) + 1,):
            problem = "its class offsets are malformed"
        elif int(offsets[0]) != 0 or int(offsets[-1]) != images.shape[0]:
            problem = "its class offsets do not match its images"
        elif bool((offsets[1:] < offsets[:-1]).any()):
            problem = "its class offsets are not increasing"
    except Exception as exc:  # corrupt file: any decoder error means "rebuild it"
        problem = f"it cannot be read ({type(exc).__name__}: {exc})"
    if problem is not None:
        warnings.warn(f"{path}: rebuilding the image cache, {problem}", UserWarning, stacklevel=4)
        return None
    return images, offsets, names


@dataclass(frozen=True)
class LoadedData:
    """Every image of a data set grouped by class, and how it was obtained."""

    images: torch.Tensor  # uint8 [num_images, C, H, W]
    class_offsets: torch.Tensor  # int64 [num_classes + 1]
    class_names: list[str]
    listing: Listing
    cache: Path
    cache_state: str  # "loaded", "written", "rebuilt" or "not written (<why>)"


def _expected_files(listing: Listing, archive: Path | None) -> tuple[int, str] | None:
    """(file count, what says so) for a known data set: the archive beside the folder,
    else the record the unpack left in it (:data:`~metasuite.data.archive.UNPACKED_RECORD`)."""
    if archive is not None and archive.name in KNOWN_FILE_COUNTS:
        return KNOWN_FILE_COUNTS[archive.name], archive.name
    try:
        record = jsontext.loads((listing.root / UNPACKED_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, int) or isinstance(files, bool):
        return None
    return files, f"{record.get('archive', 'its archive')} (as unpacked, {UNPACKED_RECORD})"


def check_complete(listing: Listing, archive: Path | None) -> None:
    """An unpacked known data set must still hold every file its archive has, whether or
    not the archive is still beside it.

    Checked on every load, not only at unpack time: a class folder deleted later would
    otherwise change the class split (and every task) without a word. Costs nothing
    when complete (the listing is made anyway); on a mismatch the archive, when there,
    is read once more to name what is missing.
    """
    if listing.layout != "folders":
        return
    known = _expected_files(listing, archive)
    if known is None:
        return
    expected, source = known
    found = sum(len(files) for files in listing.key["files"])
    if found == expected:
        return
    if found > expected:
        detail = "extra files"
    elif archive is not None and archive.is_file():
        detail = _missing_from(archive, listing)
    else:
        detail = "files are missing"
    raise DatasetError(
        f"{listing.root}: {found:,} images but {source} holds {expected:,}, so the "
        f"unpacked data set was changed ({detail}); delete {listing.root} to unpack it again"
    )


def _missing_from(archive: Path, listing: Listing) -> str:
    """Which folders of the archive lost files in the unpacked copy (the first three)."""
    have = {rel for class_files in listing.key["files"] for rel in class_files}
    missing: dict[str, int] = {}
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = PurePosixPath(member.name).parts
                # The archive's lone top folder is the unpacked folder itself.
                rel = "/".join(parts[1:])
                if rel and rel not in have:
                    folder = "/".join(parts[1:-1])
                    missing[folder] = missing.get(folder, 0) + 1
    except (tarfile.TarError, OSError, EOFError):
        return "cannot read the archive to say which files are missing"
    if not missing:
        return "files are missing"
    shown = [f"{folder}/ ({n} files)" for folder, n in sorted(missing.items())[:3]]
    more = f" and {len(missing) - 3} more folders" if len(missing) > 3 else ""
    return "missing: " + ", ".join(shown) + more


def load_dataset(
    config: ExperimentConfig, folder: Path, *, quiet: bool = False, archive: Path | None = None
) -> LoadedData:
    """Every image of the data set at ``folder``, through the cache beside it.

    Loads the cache when it matches; otherwise builds the pixels (decoding, or reading
    arrays and pickles) and writes the cache atomically. ``reset_stored_paths`` forces a
    rebuild. ``archive``: where the folder was unpacked from; a known one's file count
    is checked first (:func:`check_complete`).
    """
    listing = list_dataset(config, folder)
    check_complete(listing, archive)
    fingerprint = _fingerprint(config, listing)
    path = cache_path(folder, config, fingerprint)
    shape = (config.image_channels, config.image_height, config.image_width)
    state = "written"
    if config.reset_stored_paths:
        state = "rebuilt"
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # read-only data folder: rebuild in memory anyway
            warnings.warn(
                f"{path}: cannot remove the image cache ({exc})", UserWarning, stacklevel=2
            )
    elif path.is_file():
        cached = _load_cache(path, fingerprint, listing.names, shape)
        if cached is not None:
            return LoadedData(*cached, listing, path, "loaded")
        state = "rebuilt"
    array, counts = listing.build(
        config.image_height,
        config.image_width,
        config.image_channels,
        config.num_dataprovider_workers,
        quiet,
    )
    names = list(listing.names)
    if not names or len(counts) != len(names):
        raise DatasetError(f"{listing.root}: the {listing.layout} data set holds no classes")
    offsets = torch.zeros(len(names) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(np.cumsum(counts), dtype=torch.int64)
    images = torch.from_numpy(array)
    blob = {
        "format": CACHE_FORMAT,
        "fingerprint": fingerprint,
        "layout": listing.layout,
        "images": images,
        "class_offsets": offsets,
        "class_names": names,
    }

    def write(handle: BinaryIO) -> None:
        os.fchmod(handle.fileno(), 0o644)  # a shared cache: readable by other users
        torch.save(blob, handle)

    try:
        write_with_atomic(path, write)
    except (OSError, DiskFullError, NotWritableError) as exc:
        # A read-only or full data folder still works, just slower next time: the pixels
        # are in memory already.
        warnings.warn(f"{path}: cannot write the image cache ({exc})", UserWarning, stacklevel=2)
        state = f"not written ({getattr(exc, 'strerror', None) or exc})"
    return LoadedData(images, offsets, names, listing, path, state)


def load_images(
    config: ExperimentConfig, folder: Path, *, quiet: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every image of the data set, grouped by class: (images, class_offsets, class_names).

    :func:`load_dataset` without the record of how.
    """
    data = load_dataset(config, folder, quiet=quiet)
    return data.images, data.class_offsets, data.class_names


# --------------------------------------------------------------------------- splits
def _split_class_ids(
    config: ExperimentConfig, names: list[str], folder: Path, pre_split: bool
) -> dict[str, list[int]]:
    """Class indexes (into the sorted ``names``) of each split."""
    if pre_split:
        ids: dict[str, list[int]] = {split: [] for split in SPLITS}
        for i, name in enumerate(names):
            split = name.split("/", 1)[0]
            if split not in ids:
                raise DatasetError(
                    f"{folder}: sets_are_pre_split is true, so the first class folder must be "
                    f"train, val or test, but class {name!r} starts with {split!r} "
                    f"(indexes_of_folders_indicating_class "
                    f"{list(config.indexes_of_folders_indicating_class)}; use e.g. [-3, -2] for "
                    "<split>/<class>/<image>)"
                )
            ids[split].append(i)
        return ids
    # The reference MAML++ arithmetic, kept exactly so that the same classes land in the
    # same split: shuffle the sorted classes with RandomState(val_seed), cut at
    # int(p_train * n) and int((p_train + p_val) * n).
    if not 0 <= config.val_seed < 2**32:
        raise ConfigError(f"val_seed must be in [0, 2**32) to split classes, got {config.val_seed}")
    n = len(names)
    order = np.arange(n, dtype=np.int32)
    np.random.RandomState(seed=config.val_seed).shuffle(order)
    split = config.train_val_test_split
    cut_train = int(split[0] * n)
    cut_val = int(np.sum(split[:2]) * n)
    parts = {"train": order[:cut_train], "val": order[cut_train:cut_val], "test": order[cut_val:]}
    return {name: sorted(int(i) for i in part) for name, part in parts.items()}


def _take_classes(
    images: torch.Tensor, offsets: torch.Tensor, names: list[str], ids: list[int]
) -> SplitData:
    starts, ends = offsets[:-1][ids], offsets[1:][ids]
    sizes = ends - starts
    new_offsets = torch.zeros(len(ids) + 1, dtype=torch.int64)
    new_offsets[1:] = torch.cumsum(sizes, 0)
    contiguous = len(ids) > 0 and ids == list(range(ids[0], ids[-1] + 1))
    if contiguous:  # a view: pre-split data sets are stored split by split
        split_images = images[int(starts[0]) : int(ends[-1])]
    elif ids:
        index = torch.cat([torch.arange(int(s), int(e)) for s, e in zip(starts, ends, strict=True)])
        split_images = images.index_select(0, index)
    else:
        split_images = images[:0]
    return SplitData(split_images, new_offsets, tuple(names[i] for i in ids))


def _refuse_colour_omniglot(config: ExperimentConfig, source: DataSource) -> None:
    """Omniglot is grayscale: ``image_channels: 3`` would only copy each stroke into three
    equal channels, triple memory and write a 76 MB cache, so it is refused rather than
    converted (the reference configs all say 1)."""
    archive_name = source.archive.name if source.archive is not None else ""
    omniglot = "omniglot" in source.folder.name.lower() or "omniglot" in archive_name.lower()
    if omniglot and config.image_channels != 1:
        raise ConfigError(
            f"image_channels is {config.image_channels} but {source.folder} is Omniglot, "
            "whose images are grayscale: set image_channels to 1"
        )


def load_splits(
    config: ExperimentConfig, root: Path | None = None, *, quiet: bool = False
) -> tuple[dict[str, SplitData], DataSource]:
    """The train/val/test splits of the configured data set, and where it came from."""
    splits, source, _ = load_splits_with_record(config, root, quiet=quiet)
    return splits, source


def load_splits_with_record(
    config: ExperimentConfig, root: Path | None = None, *, quiet: bool = False
) -> tuple[dict[str, SplitData], DataSource, LoadedData]:
    """:func:`load_splits`, plus the layout and cache record (``metasuite data check``)."""
    source = locate_dataset(config, root, quiet=quiet)
    _refuse_colour_omniglot(config, source)
    data = load_dataset(config, source.folder, quiet=quiet, archive=source.archive)
    images, offsets, names = data.images, data.class_offsets, data.class_names
    ids = _split_class_ids(config, names, source.folder, data.listing.pre_split)
    splits = {split: _take_classes(images, offsets, names, ids[split]) for split in SPLITS}
    return splits, source, data


__all__ = [
    "SPLITS",
    "DataSource",
    "LoadedData",
    "SplitData",
    "cache_path",
    "check_complete",
    "find_archive",
    "list_dataset",
    "load_dataset",
    "load_images",
    "load_splits",
    "load_splits_with_record",
    "locate_dataset",
    "scan_images",
]
