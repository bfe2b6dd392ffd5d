"""Text layouts: labelled sentences on disk → one list of rows (text, label, domain).

Layouts (:data:`TEXT_LAYOUTS`), found in the data set folder:

- ``jsonl``: one JSON object per line;
- ``json``: one list of objects (the review-domain system's ``{"text", "label",
  "domain"}`` files);
- ``csv`` / ``tsv``: a header row naming the columns;
- ``txt``: ``<class>/*.txt`` or ``<domain>/<label>/*.txt``, one example per file.

A folder holds either one row file (split by class or domain ratio later) or
``train``/``val``/``test`` files of one format (pre-split). Column names come from the
config (``text_column``, ``label_column``, ``domain_column``). Every problem is one line
naming the file and row: a missing or empty text column, a missing label, non-UTF-8
bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metasuite import jsontext
from metasuite.errors import DatasetError

TEXT_LAYOUTS: dict[str, str] = {
    "jsonl": "JSON lines: one object per line with text/label[/domain] keys",
    "json": "a JSON list of objects with text/label[/domain] keys (review-domain files)",
    "csv": "CSV with a header row naming the text/label[/domain] columns",
    "tsv": "TSV with a header row naming the text/label[/domain] columns",
    "txt": "text folders: <class>/*.txt or <domain>/<label>/*.txt, one example per file",
}
ROW_SUFFIXES: dict[str, str] = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
SPLIT_STEMS = ("train", "val", "test")


@dataclass(frozen=True)
class Columns:
    """Which keys of a row hold the text, the label and the domain."""

    text: str
    label: str
    domain: str


@dataclass(frozen=True)
class TextListing:
    """A text data set as found on disk, before any row is read.

    ``files`` maps a split (``"train"``…) to its file, or ``""`` to the single file (or
    for ``txt``, to the folder) when the data are not pre-split.
    """

    layout: str
    root: Path
    files: dict[str, Path]

    @property
    def pre_split(self) -> bool:
        return "" not in self.files

    def content_hash(self) -> str:
        """sha256 over every file's relative path and bytes: the cache key's data part."""
        digest = hashlib.sha256(self.layout.encode())
        for path in self._all_files():
            digest.update(str(path.relative_to(self.root)).encode() + b"\0")
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()

    def _all_files(self) -> list[Path]:
        if self.layout != "txt":
            return [self.files[k] for k in sorted(self.files)]
        return sorted(
            Path(d) / f for d, _, fs in os.walk(self.root) for f in fs if f.endswith(".txt")
        )


@dataclass(frozen=True)
class TextRows:
    """Every example: its text, label, domain ("" when none) and split ("" unless pre-split)."""

    texts: list[str]
    labels: list[str]
    domains: list[str]
    splits: list[str]


def scan_text(folder: Path) -> TextListing:
    """The text layout of ``folder`` (cheap: names only). Raises DatasetError naming the
    layouts when none matches."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    rows = [p for p in entries if p.is_file() and p.suffix.lower() in ROW_SUFFIXES]
    by_split = {p.stem.lower(): p for p in rows if p.stem.lower() in SPLIT_STEMS}
    if set(by_split) == set(SPLIT_STEMS):
        kinds = {ROW_SUFFIXES[p.suffix.lower()] for p in by_split.values()}
        if len(kinds) != 1:
            raise DatasetError(
                f"{folder}: train/val/test files of different formats ({sorted(kinds)}); "
                "use one format for the three"
            )
        return TextListing(kinds.pop(), folder, by_split)
    if len(rows) == 1:
        return TextListing(ROW_SUFFIXES[rows[0].suffix.lower()], folder, {"": rows[0]})
    if len(rows) > 1:
        raise DatasetError(
            f"{folder}: {len(rows)} row files ({', '.join(p.name for p in rows[:4])}); expected "
            "one, or train, val and test files of one format"
        )
    if any(f.endswith(".txt") for _, _, fs in os.walk(folder) for f in fs):
        return TextListing("txt", folder, {"": folder})
    raise DatasetError(
        f"{folder}: no text data set layout recognised; expected one of: "
        + "; ".join(f"{name} ({text})" for name, text in TEXT_LAYOUTS.items())
    )


def read_rows(listing: TextListing, columns: Columns, *, need_domain: bool) -> TextRows:
    """Every row of the data set (one pass over the files)."""
    rows = TextRows([], [], [], [])
    if listing.layout == "txt":
        _read_txt(listing.root, rows, need_domain)
        return rows
    for split, path in sorted(listing.files.items()):
        records = _records(path, listing.layout)
        for where, record in records:
            _add(rows, record, columns, f"{path}: {where}", split, need_domain)
        if not records:
            raise DatasetError(f"{path}: holds no rows")
    return rows


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}: line {line} is not UTF-8 text (byte {exc.start}); re-save the file as UTF-8"
        ) from None


def _records(path: Path, layout: str) -> list[tuple[str, Any]]:
    text = _decode(path)
    if layout == "jsonl":
        out = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append((f"line {number}", jsontext.loads(line)))
            except jsontext.JsonTextError as exc:
                raise DatasetError(f"{path}: line {number}: {exc}") from None
        return out
    if layout == "json":
        try:
            data = jsontext.loads(text)
        except jsontext.JsonTextError as exc:
            raise DatasetError(f"{path}: {exc}") from None
        if not isinstance(data, list):
            raise DatasetError(
                f"{path}: expected a JSON list of objects, got {type(data).__name__}"
            )
        return [(f"item {i}", r) for i, r in enumerate(data)]
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if layout == "tsv" else ",")
    return [(f"row {number}", row) for number, row in enumerate(reader, 2)]


def _add(
    rows: TextRows, record: Any, columns: Columns, where: str, split: str, need_domain: bool
) -> None:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object, got {type(record).__name__}")
    for key, what, needed in (
        (columns.text, "text_column", True),
        (columns.label, "label_column", True),
        (columns.domain, "domain_column", need_domain),
    ):
        if needed and key not in record:
            raise DatasetError(
                f"{where}: no {key!r} column (has {sorted(map(str, record))}); set {what}"
            )
    text = record[columns.text]
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{where}: the {columns.text!r} column is empty; expected text")
    label = record[columns.label]
    if label is None or str(label).strip() == "":
        raise DatasetError(f"{where}: the {columns.label!r} column is empty; expected a label")
    domain = record.get(columns.domain, "")
    if need_domain and (domain is None or str(domain).strip() == ""):
        raise DatasetError(f"{where}: the {columns.domain!r} column is empty; expected a domain")
    rows.texts.append(text)
    rows.labels.append(str(label))
    rows.domains.append("" if domain is None else str(domain))
    rows.splits.append(split)


def _read_txt(root: Path, rows: TextRows, need_domain: bool) -> None:
    files = sorted(Path(d) / f for d, _, fs in os.walk(root) for f in fs if f.endswith(".txt"))
    for path in files:
        parts = path.relative_to(root).parts[:-1]
        if len(parts) not in (1, 2) or (need_domain and len(parts) != 2):
            want = "<domain>/<label>/*.txt" if need_domain else "<class>/*.txt"
            raise DatasetError(f"{path}: expected {want} under {root}")
        text = _decode(path)
        if not text.strip():
            raise DatasetError(f"{path}: empty file; expected the example's text")
        rows.texts.append(text.strip())
        rows.labels.append(parts[-1])
        rows.domains.append(parts[0] if len(parts) == 2 else "")
        rows.splits.append("")


__all__ = ["TEXT_LAYOUTS", "Columns", "TextListing", "TextRows", "read_rows", "scan_text"]
