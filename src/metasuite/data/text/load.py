"""Text data set → token ids of every row, through one cache beside the data.

The folder is found (and its archive unpacked on first use) exactly as for images
(:func:`metasuite.data.folders.locate_dataset`). Two files are kept beside it, each
named by a hash of what it depends on, so a changed file, column or tokenizer can never
reuse a stale one::

    <data folder>.text.<key>.tokenizer.json  WordPiece trained on the training split
    <data folder>.text.<key>.cache.pt        token ids of every row, labels, domains

The tokenizer's key hashes the file contents, the columns, the task unit, the split
settings and ``vocab_size``; the cache's key hashes the file contents, the columns and
the tokenizer's own sha256 with ``max_length``. Training the tokenizer on the training
split only keeps validation and test words out of its vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from metasuite.config import ExperimentConfig, dataset_root
from metasuite.data.folders import SPLITS, DataSource, _split_class_ids, locate_dataset
from metasuite.data.text.rows import Columns, TextListing, TextRows, read_rows, scan_text
from metasuite.data.text.tokenizer import (
    KEPT_FOLDER,
    TextTokenizer,
    from_folder,
    from_json,
    model_folder,
    train_wordpiece,
)
from metasuite.errors import DatasetError, DiskFullError
from metasuite.fsutil import write_text_atomic, write_with_atomic

CACHE_FORMAT = 1
TOKENIZER_FORMAT = 2
"""Part of the trained tokenizer's key: 2 numbers the vocabulary canonically."""


@dataclass(frozen=True)
class TextData:
    """Every row as token ids (row ``r`` is ``ids[offsets[r]:offsets[r + 1]]``)."""

    ids: torch.Tensor  # int32 [total tokens]
    offsets: torch.Tensor  # int64 [rows + 1]
    labels: list[str]
    domains: list[str]
    splits: list[str]  # "" unless pre-split
    tokenizer: TextTokenizer
    listing: TextListing
    cache: Path
    cache_state: str


def columns_of(config: ExperimentConfig) -> Columns:
    return Columns(config.text_column, config.label_column, config.domain_column)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def unit_names(
    config: ExperimentConfig, labels: list[str], domains: list[str], splits: list[str]
) -> list[str]:
    """What is split into train/val/test per row: its class, or its domain; prefixed by
    the file's split when the data are pre-split."""
    units = domains if config.task_unit == "domain" else labels
    return [f"{s}/{u}" if s else u for u, s in zip(units, splits, strict=True)]


def split_units(
    config: ExperimentConfig, names: list[str], folder: Path, pre_split: bool
) -> dict[str, list[str]]:
    """The unit names of each split: pre-split files, named domains, or the ratio split
    of the image classes (the reference arithmetic over the sorted names)."""
    unique = sorted(set(names))
    named = config.task_unit == "domain" and (config.val_domains or config.test_domains)
    if named and not pre_split:
        chosen = {"val": list(config.val_domains or ()), "test": list(config.test_domains or ())}
        for split, wanted in chosen.items():
            unknown = [d for d in wanted if d not in unique]
            if unknown:
                raise DatasetError(
                    f"{folder}: {split}_domains names {unknown}, which the data do not hold "
                    f"(domains: {unique[:12]}{' ...' if len(unique) > 12 else ''})"
                )
        taken = set(chosen["val"]) | set(chosen["test"])
        return {"train": [u for u in unique if u not in taken], **chosen}
    ids = _split_class_ids(config, unique, folder, pre_split)
    return {split: [unique[i] for i in ids[split]] for split in SPLITS}


def _tokenizer(
    config: ExperimentConfig,
    listing: TextListing,
    content: str,
    rows: _Rows,
    experiment: Path | None,
) -> TextTokenizer:
    if config.tokenizer != "wordpiece":
        return from_folder(model_folder(config.tokenizer, "tokenizer", dataset_root()), "tokenizer")
    key = _key(
        "wordpiece",
        TOKENIZER_FORMAT,
        content,
        columns_of(config).__dict__,
        config.task_unit,
        config.val_seed,
        list(config.train_val_test_split),
        config.val_domains,
        config.test_domains,
        config.vocab_size,
    )
    path = listing.root.parent / f"{listing.root.name}.text.{key}.tokenizer.json"
    kept = None if experiment is None else experiment / KEPT_FOLDER / "tokenizer.json"
    if kept is not None and kept.is_file():
        # The experiment's own tokenizer wins (resume, test): put it where the token-id
        # cache and the backbone (tokenizer_for) look, if another is there.
        text = kept.read_text(encoding="utf-8")
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            _keep(path, text)
        return from_json(text, str(kept))
    if path.is_file() and not config.reset_stored_paths:
        return from_json(path.read_text(encoding="utf-8"), str(path))
    data = rows.get()
    names = unit_names(config, data.labels, data.domains, data.splits)
    train = set(split_units(config, names, listing.root, listing.pre_split)["train"])
    text = train_wordpiece(
        [t for t, n in zip(data.texts, names, strict=True) if n in train], config.vocab_size
    )
    _keep(path, text)
    return from_json(text, str(path))


def _keep(path: Path, text: str) -> None:
    try:
        write_text_atomic(path, text)
    except (OSError, DiskFullError) as exc:
        warnings.warn(f"{path}: cannot keep the tokenizer ({exc})", UserWarning, stacklevel=2)


class _Rows:
    """The rows, read at most once per load (only when a cache has to be built)."""

    def __init__(self, listing: TextListing, config: ExperimentConfig) -> None:
        self.listing, self.config, self.rows = listing, config, None

    def get(self) -> TextRows:
        if self.rows is None:
            self.rows = read_rows(
                self.listing,
                columns_of(self.config),
                need_domain=self.config.task_unit == "domain",
            )
        return self.rows


def load_text(
    config: ExperimentConfig,
    root: Path | None = None,
    *,
    quiet: bool = False,
    experiment: Path | None = None,
) -> tuple[TextData, DataSource]:
    """Token ids of every row of the configured text data set, and where it came from.

    ``experiment``: the experiment folder; a trained tokenizer kept there (by an earlier
    run of it) is used instead of the one beside the data, so a resumed or test-only run
    tokenizes exactly as the run it continues."""
    source = locate_dataset(config, root, quiet=quiet)
    listing = scan_text(source.folder)
    content = listing.content_hash()
    rows = _Rows(listing, config)
    tokenizer = _tokenizer(config, listing, content, rows, experiment)
    key = _key(
        CACHE_FORMAT,
        content,
        columns_of(config).__dict__,
        config.task_unit,
        tokenizer.digest,
        config.max_length,
    )
    path = listing.root.parent / f"{listing.root.name}.text.{key}.cache.pt"
    state = "written"
    if path.is_file() and not config.reset_stored_paths:
        try:
            blob = torch.load(path, weights_only=True)
            if blob.get("key") == key:
                return TextData(
                    blob["ids"],
                    blob["offsets"],
                    blob["labels"],
                    blob["domains"],
                    blob["splits"],
                    tokenizer,
                    listing,
                    path,
                    "loaded",
                ), source
        except Exception:  # a damaged cache is rebuilt
            pass
        state = "rebuilt"
    elif config.reset_stored_paths:
        state = "rebuilt"
    data = rows.get()
    encoded = tokenizer.encode(data.texts, config.max_length)
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    offsets = torch.zeros(len(encoded) + 1, dtype=torch.int64)
    offsets[1:] = torch.from_numpy(np.cumsum(lengths))
    flat = np.fromiter((i for e in encoded for i in e), dtype=np.int32, count=int(lengths.sum()))
    ids = torch.from_numpy(flat)
    blob = {
        "format": CACHE_FORMAT,
        "key": key,
        "ids": ids,
        "offsets": offsets,
        "labels": data.labels,
        "domains": data.domains,
        "splits": data.splits,
    }

    def write(handle: BinaryIO) -> None:
        os.fchmod(handle.fileno(), 0o644)
        torch.save(blob, handle)

    try:
        write_with_atomic(path, write)
    except (OSError, DiskFullError) as exc:
        warnings.warn(f"{path}: cannot write the text cache ({exc})", UserWarning, stacklevel=2)
        state = "not written"
    return TextData(
        ids, offsets, data.labels, data.domains, data.splits, tokenizer, listing, path, state
    ), source


def tokenizer_for(config: ExperimentConfig) -> TextTokenizer:
    """The experiment's tokenizer (what the text backbones size their embedding by): a
    model folder's directly, a trained one through the data set's cache (not memoised:
    the same config may name other data under another DATASET_DIR)."""
    if config.tokenizer != "wordpiece":
        return from_folder(model_folder(config.tokenizer, "tokenizer", dataset_root()), "tokenizer")
    return load_text(config, quiet=True)[0].tokenizer


__all__ = ["TextData", "columns_of", "load_text", "split_units", "tokenizer_for", "unit_names"]
