"""Reading an experiment's metrics log and checking its TensorBoard event files.

The log (``logs/metrics.jsonl``, written by :mod:`metasuite.training.metrics`; its
record format is documented there and in docs/DESIGN.md) is read here by views only, so
this module reads files and never imports training code. A damaged file is reported as
one line naming it, and the caller carries on with the other experiments.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metasuite.training.experiment_dir import METRICS_FILE, TENSORBOARD_DIR


@dataclass(frozen=True)
class MetricsLogRead:
    """The records of one metrics log, or why it could not be used (``problem``)."""

    path: Path
    records: tuple[dict[str, Any], ...] = ()
    problem: str | None = None

    def split(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("split") == name]


def read_metrics_log(folder: Path) -> MetricsLogRead:
    """The experiment's metrics log: no records and no problem when there is none.

    A last line without its newline is one being appended (or cut short by a kill, which
    a resume repairs) and is left out silently; any other line that is not a record with
    ``split``, ``epoch`` and ``iteration`` makes the whole log unusable, named with its
    line number (half a log would draw a wrong curve).
    """
    path = folder / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return MetricsLogRead(path)
    except (OSError, UnicodeDecodeError) as exc:
        return MetricsLogRead(path, problem=f"{path}: cannot read it ({exc})")
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            ok = (
                isinstance(record, dict)
                and record.get("split") in ("train", "val", "test")
                and isinstance(record.get("epoch"), int)
                and isinstance(record.get("iteration"), int)
            )
        except ValueError:
            ok = False
        if not ok:
            return MetricsLogRead(
                path, problem=f"{path} line {number}: damaged (not a metrics record)"
            )
        records.append(record)
    return MetricsLogRead(path, tuple(records))


_HEADER = struct.Struct("<QI")
_FOOTER = 4


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C (Castagnoli), here only for 8-byte length fields."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def check_event_files(folder: Path) -> tuple[int, str | None]:
    """(number of event files, the first problem) of the experiment's TensorBoard run.

    Walks the TFRecord framing of each file (length, its CRC, data, data CRC), checking
    every length against its CRC, so that an overwritten or spliced file is named in
    one line instead of silently showing a short curve; the data CRCs are TensorBoard's
    to check. A trailing record cut short is what a kill mid-write leaves, and
    TensorBoard skips it: not a problem.
    """
    files = sorted((folder / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            return len(files), f"{path}: cannot read it ({exc})"
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            if masked_crc32c(data[offset : offset + 8]) != crc:
                return len(files), (
                    f"{path}: damaged TensorBoard event file (bad record length at byte {offset})"
                )
            offset += _HEADER.size + length + _FOOTER
    return len(files), None


__all__ = ["MetricsLogRead", "check_event_files", "read_metrics_log"]
