"""What ``metasuite data check`` shows of a text data set (the loader itself runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metasuite.config import ExperimentConfig
from metasuite.data.folders import SPLITS
from metasuite.data.text.load import load_text, split_units, unit_names
from metasuite.data.text.rows import TEXT_LAYOUTS
from metasuite.data.text.sampler import group_split

CACHE_STATES = {
    "loaded": "loaded (up to date)",
    "written": "built now (there was none)",
    "rebuilt": "rebuilt now (the old one was stale or reset_stored_paths is set)",
}


def describe_text(config: ExperimentConfig, root: Path | None = None, quiet: bool = True) -> str:
    """Layout, files, task unit and split, tokenizer, cache, and counts per split."""
    data, source = load_text(config, root, quiet=quiet)
    names = unit_names(config, data.labels, data.domains, data.splits)
    by_split = split_units(config, names, source.folder, data.listing.pre_split)
    listing = data.listing
    lines = [f"data set:   {source.folder}"]
    if source.archive is not None:
        lines.append(f"archive:    {source.archive}")
    lines.append(f"layout:     {listing.layout} ({TEXT_LAYOUTS[listing.layout]})")
    files = ", ".join(
        f"{k + ': ' if k else ''}{p.relative_to(listing.root) if p != listing.root else '.'}"
        for k, p in sorted(listing.files.items())
    )
    lines.append(f"files:      {files}")
    columns = f"text {config.text_column!r}, label {config.label_column!r}"
    if config.task_unit == "domain":
        columns += f", domain {config.domain_column!r}"
    lines.append(f"columns:    {columns}")
    if listing.pre_split:
        how = "pre-split files"
    elif config.task_unit == "domain" and (config.val_domains or config.test_domains):
        how = "domains named by val_domains/test_domains"
    else:
        how = f"split by ratio {list(config.train_val_test_split)} with val_seed {config.val_seed}"
    lines.append(f"task unit:  {config.task_unit} ({how})")
    tok = data.tokenizer
    trained = " (trained on the training split)" if config.tokenizer == "wordpiece" else ""
    lines.append(
        f"tokenizer:  {tok.source}{trained}: {tok.vocab_size:,} tokens, pad id "
        f"{tok.pad_id}, sha256 {tok.digest[:16]}"
    )
    lines.append(f"cache:      {data.cache} {CACHE_STATES.get(data.cache_state, data.cache_state)}")
    lengths = (data.offsets[1:] - data.offsets[:-1]).numpy()
    unit = "domains" if config.task_unit == "domain" else "classes"
    lines.append(
        f"{'split':<6} {unit:>8} {'labels':>7} {'examples':>9}  examples per label  "
        f"tokens per example (mean, max {config.max_length})"
    )
    for split in SPLITS:
        part = group_split(config, data, by_split[split])
        sizes = [len(rows) for pool in part.groups for rows in pool]
        rows = np.concatenate([r for pool in part.groups for r in pool]) if sizes else []
        spread = f"{min(sizes)}-{max(sizes)}" if sizes else "-"
        mean = f"{lengths[rows].mean():.1f}" if len(rows) else "-"
        units = len(part.pool_names) if config.task_unit == "domain" else part.num_classes
        lines.append(
            f"{split:<6} {units:>8,} {part.num_classes:>7,} {part.num_rows:>9,}  "
            f"{spread:<18}  {mean}"
        )
    return "\n".join(lines) + "\n"


__all__ = ["describe_text"]
