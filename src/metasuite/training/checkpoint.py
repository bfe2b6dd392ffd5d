"""Checkpoints that survive being killed at any moment, and know when they are damaged.

The reference code overwrote one checkpoint in place, so a kill during the save
destroyed the only resume point. Here every checkpoint is a new file written atomically
(temporary file, fsync, ``os.replace``) and the previous ones are kept until a newer one
is in place, so there is always a good file to fall back on.

File format (version :data:`FORMAT_VERSION`). A checkpoint is an ordinary ``torch.save``
file holding a small envelope::

    {"format": "metasuite-checkpoint", "sha256": <hex digest of body>,
     "body": <bytes of torch.save({"format_version": 1, "payload": {...}})>}

The payload is the builder's checkpoint dict (see ``metasuite.training.builder``). The double
wrapping buys a checksum over everything that matters: a truncated file fails to load,
and a file damaged in the middle fails the checksum (torch does not verify its zip
CRCs on load, so a plain ``torch.save`` file can load damaged tensors without
complaint). The version sits inside the checksummed body, so a damaged byte cannot
masquerade as a file from another metasuite version. Both levels load with
``torch.load(weights_only=True)``, so payloads hold only tensors, dicts, lists, tuples,
numbers, strings, bytes and None (RNG states are stored as tensors) and loading a
checkpoint can never run code. Read one by hand with :func:`load_checkpoint`.

Folder layout (``<experiment>/checkpoints/``):

- ``iter_<iteration:08d>.pt``: a resume point inside an epoch;
- ``epoch_<epoch:04d>_iter_<iteration:08d>.pt``: the state at the end of epoch
  ``epoch`` (0-based) after validation; the best ``max_models_to_save`` by validation
  accuracy are kept for the ensemble test and for ``continue_from_epoch``.

``iteration`` counts completed meta-iterations since the start of training, so files
order by it; the newest loadable one is the resume point.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metasuite.errors import UserError
from metasuite.fsutil import atomic_open, fsync_dir
from metasuite.training.faults import fault_point

FORMAT = "metasuite-checkpoint"
FORMAT_VERSION = 1

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(?:iter_(?P<it>\d{8})|epoch_(?P<ep>\d{4})_iter_(?P<eit>\d{8}))\.pt$")


class CorruptCheckpointError(Exception):
    """The file is truncated, damaged or not a metasuite checkpoint."""


@dataclass(frozen=True, order=True)
class CheckpointFile:
    """A checkpoint file, described by its name alone (no loading needed)."""

    iteration: int
    epoch_end: int | None  # the 0-based epoch whose end this is, or None (mid-epoch)
    path: Path

    @property
    def is_epoch_end(self) -> bool:
        return self.epoch_end is not None


def encode(payload: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file for ``payload``."""
    inner = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, "payload": payload}, inner)
    body = inner.getvalue()
    outer = io.BytesIO()
    torch.save({"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest(), "body": body}, outer)
    return outer.getvalue()


def decode(data: bytes, source: str = "<bytes>") -> dict[str, Any]:
    """Check and unpack checkpoint bytes; :class:`CorruptCheckpointError` if damaged."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged file's pickle warnings are noise
            outer = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # truncated zip, garbage, anything torch cannot read
        raise CorruptCheckpointError(f"{source}: cannot be loaded ({exc})") from exc
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise CorruptCheckpointError(f"{source}: not a metasuite checkpoint")
    body = outer.get("body")
    if not isinstance(body, bytes) or hashlib.sha256(body).hexdigest() != outer.get("sha256"):
        raise CorruptCheckpointError(f"{source}: checksum mismatch (damaged file)")
    # The checksum held, so a failure from here on is a bug (e.g. a payload type that
    # weights_only refuses), not damage: let it propagate instead of falling back.
    inner = torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    version = inner.get("format_version")
    if version != FORMAT_VERSION:
        # Not damage (the checksum held): another metasuite wrote it. Falling back to an
        # older file would silently lose work, so stop and say so.
        raise UserError(
            f"{source}: checkpoint format version {version!r}, but this metasuite reads "
            f"version {FORMAT_VERSION}; use the metasuite version that wrote it"
        )
    return inner["payload"]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a kill leaves the old files untouched."""
    data = encode(payload)
    with atomic_open(Path(path)) as handle:
        handle.write(data)
        fault_point("checkpoint-write")  # temp file written, not yet renamed


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and verify one checkpoint file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptCheckpointError(f"{path}: cannot be read ({exc.strerror})") from exc
    return decode(data, source=str(path))


class CheckpointStore:
    """The ``checkpoints/`` folder of one experiment: naming, listing, fallback, pruning."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path_for(self, iteration: int, epoch_end: int | None) -> Path:
        if epoch_end is None:
            return self.folder / f"iter_{iteration:08d}.pt"
        return self.folder / f"epoch_{epoch_end:04d}_iter_{iteration:08d}.pt"

    def save(self, payload: dict[str, Any], iteration: int, epoch_end: int | None) -> Path:
        path = self.path_for(iteration, epoch_end)
        save_checkpoint(path, payload)
        return path

    def files(self) -> list[CheckpointFile]:
        """All checkpoint files, oldest first (by iteration; an epoch end after a mid-epoch
        file of the same iteration, since it also holds validation)."""
        if not self.folder.is_dir():
            return []
        found = []
        for entry in self.folder.iterdir():
            match = _NAME.match(entry.name)
            if not match:
                continue
            if match["it"] is not None:
                found.append(CheckpointFile(int(match["it"]), None, entry))
            else:
                found.append(CheckpointFile(int(match["eit"]), int(match["ep"]), entry))
        return sorted(found, key=lambda f: (f.iteration, f.is_epoch_end, f.path.name))

    def epoch_files(self) -> dict[int, CheckpointFile]:
        return {f.epoch_end: f for f in self.files() if f.epoch_end is not None}

    def load_latest(self) -> tuple[CheckpointFile, dict[str, Any]] | None:
        """The newest checkpoint that loads; damaged newer ones are skipped with a warning.

        None when there is no checkpoint at all. If every file is damaged, that is an
        error rather than a silent fresh start.
        """
        candidates = self.files()
        for ckpt in reversed(candidates):
            try:
                return ckpt, load_checkpoint(ckpt.path)
            except CorruptCheckpointError as exc:
                log.warning("%s; falling back to the previous checkpoint", exc)
        if candidates:
            raise UserError(
                f"{self.folder}: all {len(candidates)} checkpoints are damaged; "
                "delete them (or the experiment folder) to start from scratch"
            )
        return None

    def load_epoch(self, epoch: int) -> tuple[CheckpointFile, dict[str, Any]]:
        """The end-of-epoch checkpoint of ``epoch`` (for continue_from_epoch)."""
        available = self.epoch_files()
        if epoch not in available:
            have = ", ".join(str(e) for e in sorted(available)) or "none"
            raise UserError(
                f"continue_from_epoch {epoch}: no checkpoint for the end of epoch {epoch} in "
                f"{self.folder} (epochs available: {have})"
            )
        ckpt = available[epoch]
        try:
            return ckpt, load_checkpoint(ckpt.path)
        except CorruptCheckpointError as exc:
            raise UserError(f"continue_from_epoch {epoch}: {exc}") from None

    def prune(self, keep_epochs: Iterable[int], keep_recent: int = 2) -> list[Path]:
        """Delete checkpoints that are neither among the ``keep_recent`` newest nor the
        end-of-epoch files of ``keep_epochs``. Returns the deleted paths.

        Keeping more than one recent file is what makes fallback possible: the newest
        may be damaged, and the one before it must still exist.
        """
        keep = set(keep_epochs)
        files = self.files()
        recent = {f.path for f in files[-keep_recent:]} if keep_recent > 0 else set()
        removed = []
        for f in files:
            if f.path in recent or (f.epoch_end is not None and f.epoch_end in keep):
                continue
            f.path.unlink(missing_ok=True)
            removed.append(f.path)
        if removed:
            fsync_dir(self.folder)
        return removed

    def remove_newer_than(self, iteration: int) -> list[Path]:
        """Delete checkpoints after ``iteration`` (a run restarted from an earlier epoch
        abandons them; left in place they would be taken as the latest)."""
        removed = []
        for f in self.files():
            if f.iteration > iteration:
                f.path.unlink(missing_ok=True)
                removed.append(f.path)
        return removed

    def remove_mid_epoch(self) -> list[Path]:
        """Delete the ``iter_*.pt`` resume points: once training is over and tested only
        the end-of-epoch files mean anything (the newest of them resumes a done run)."""
        removed = [f.path for f in self.files() if not f.is_epoch_end]
        for path in removed:
            path.unlink(missing_ok=True)
        if removed:
            fsync_dir(self.folder)
        return removed

    def remove_all(self) -> int:
        count = 0
        for f in self.files():
            f.path.unlink(missing_ok=True)
            count += 1
        self.remove_temp_files()
        return count

    def remove_temp_files(self) -> int:
        """Delete temporary files left by a save that was killed before its rename.

        Only call this while holding the experiment lock: a live writer's temp file
        looks the same.
        """
        if not self.folder.is_dir():
            return 0
        count = 0
        for entry in self.folder.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)
                count += 1
        return count


__all__ = [
    "FORMAT_VERSION",
    "CheckpointFile",
    "CheckpointStore",
    "CorruptCheckpointError",
    "decode",
    "encode",
    "load_checkpoint",
    "save_checkpoint",
]
