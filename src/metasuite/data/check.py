"""What ``metasuite data check`` reports: a data set as the trainer would load it.

Runs the loader itself (locate, unpack on first use, detect the layout, load or build
the image cache, split), so what it prints is what training would see, without building
a model.
"""

from __future__ import annotations

from pathlib import Path

from metasuite.config import ExperimentConfig, replace
from metasuite.data.folders import SPLITS, load_splits_with_record, locate_dataset
from metasuite.data.layouts import LAYOUTS
from metasuite.errors import DatasetError

CACHE_STATES = {
    "loaded": "loaded (up to date)",
    "written": "built now (there was none)",
    "rebuilt": "rebuilt now (the old one was stale or reset_stored_paths is set)",
}


def describe_dataset(config: ExperimentConfig, root: Path | None = None, quiet: bool = True) -> str:
    """Layout, classes and images per split, image size and cache state, as text.

    Text data sets (``modality: "text"``, or a folder holding no images but a text
    layout) are described by :func:`metasuite.data.text.check.describe_text`."""
    if config.modality == "text":
        return _describe_text(config, root, quiet)
    try:
        return _describe_images(config, root, quiet)
    except DatasetError as exc:
        if "no images found" not in str(exc) or not _holds_text(config, root):
            raise
        return _describe_text(replace(config, source="data check", modality="text"), root, quiet)


def _holds_text(config: ExperimentConfig, root: Path | None) -> bool:
    from metasuite.data.text.rows import scan_text

    try:
        scan_text(locate_dataset(config, root, quiet=True).folder)
    except DatasetError:
        return False
    return True


def _describe_text(config: ExperimentConfig, root: Path | None, quiet: bool) -> str:
    from metasuite.data.text.check import describe_text

    return describe_text(config, root, quiet)


def _describe_images(config: ExperimentConfig, root: Path | None, quiet: bool) -> str:
    splits, source, data = load_splits_with_record(config, root, quiet=quiet)
    listing = data.listing
    lines = [f"data set:   {source.folder}"]
    if source.archive is not None:
        lines.append(f"archive:    {source.archive}")
    if listing.root != source.folder:
        lines.append(f"files in:   {listing.root}")
    lines.append(f"layout:     {listing.layout} ({LAYOUTS[listing.layout]})")
    split_how = (
        "pre-split"
        if listing.pre_split
        else f"split by ratio {list(config.train_val_test_split)} with val_seed {config.val_seed}"
    )
    lines.append(f"splits:     {split_how}")
    channels, height, width = data.images.shape[1:]
    lines.append(f"image size: {height}x{width}x{channels} (image_height x image_width x channels)")
    state = CACHE_STATES.get(data.cache_state, data.cache_state)
    lines.append(f"cache:      {data.cache} {state}")
    lines.append(f"{'split':<6} {'classes':>8} {'images':>9}  images per class")
    for split in SPLITS:
        part = splits[split]
        sizes = part.class_sizes()
        spread = f"{int(sizes.min())}-{int(sizes.max())}" if len(sizes) else "-"
        lines.append(f"{split:<6} {part.num_classes:>8,} {part.num_images:>9,}  {spread}")
    total = sum(splits[s].num_images for s in SPLITS)
    lines.append(f"{'total':<6} {sum(splits[s].num_classes for s in SPLITS):>8,} {total:>9,}")
    return "\n".join(lines) + "\n"


__all__ = ["describe_dataset"]
