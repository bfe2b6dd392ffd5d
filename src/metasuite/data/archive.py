"""Unpack a data set archive (``.tar.bz2``) so that a half-done unpack never looks done.

The archive is extracted into a hidden temporary folder beside it and only renamed into
place once tar has finished and the file count is right; a killed unpack leaves just the
temporary folder, which the next attempt deletes. An exclusive lock file serialises
concurrent attempts (two experiments started at once, parallel test runs), so one never
deletes the temporary folder another is still filling.

``tar -I pbzip2`` decompresses on every core; without pbzip2 Python's :mod:`tarfile` does
the same job on one core with its ``"data"`` filter (no absolute paths, no links out of
the folder, no device files).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from metasuite.errors import DatasetError
from metasuite.fsutil import fsync_dir

KNOWN_FILE_COUNTS: dict[str, int] = {
    "omniglot.tar.bz2": 32_460,  # 1,623 characters x 20 drawings
    "omniglot_dataset.tar.bz2": 32_460,
    "mini_imagenet_full_size.tar.bz2": 60_000,  # 100 classes x 600 images
}
"""Files the real archives hold, by archive file name: a repacked or partial copy of a
known data set is refused instead of silently training on fewer classes."""

ARCHIVE_SUFFIX = ".tar.bz2"


def archive_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """sha256 of an archive's bytes, for reproducibility records (which data was used)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def pbzip2_available() -> bool:
    """True when both ``tar`` and ``pbzip2`` are on PATH (the fast, multi-core path)."""
    return shutil.which("pbzip2") is not None and shutil.which("tar") is not None


def _temp_folder(archive: Path) -> Path:
    # A fixed name (not per process): the next attempt must find a killed one's leftovers.
    return archive.parent / f".{archive.name}.unpacking"


@contextlib.contextmanager
def _locked(archive: Path) -> Iterator[None]:
    lock_path = archive.parent / f".{archive.name}.lock"
    try:
        handle = open(lock_path, "a+b")  # noqa: SIM115 (held for the whole block)
    except OSError as exc:
        raise DatasetError(
            f"{archive}: cannot create lock file {lock_path} ({exc.strerror}); "
            "is the data set folder writable?"
        ) from None
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _extract_pbzip2(archive: Path, into: Path, expected: int | None, quiet: bool) -> None:
    command = ["tar", "-I", "pbzip2", "--no-same-owner", "-xvf", str(archive), "-C", str(into)]
    # stderr goes to a file, not a pipe: tar can warn once per member (clock skew), and a
    # full pipe nobody reads would block it forever.
    with (
        tempfile.TemporaryFile() as errors,
        tqdm(
            total=expected, unit="file", desc=f"unpacking {archive.name} (pbzip2)", disable=quiet
        ) as bar,
    ):
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, text=True, errors="replace"
        )
        assert process.stdout is not None
        for line in process.stdout:  # -v prints one member per line: the progress bar
            if not line.rstrip("\n").endswith("/"):
                bar.update(1)
        code = process.wait()
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    if code != 0:
        detail = " ".join(stderr.strip().splitlines()[-3:]) or f"exit status {code}"
        raise DatasetError(
            f"{archive}: cannot unpack, the archive looks corrupt or truncated "
            f"(tar -I pbzip2: {detail}); expected a complete .tar.bz2 file"
        )


def _extract_tarfile(archive: Path, into: Path, expected: int | None, quiet: bool) -> None:
    try:
        with (
            tarfile.open(archive, "r:bz2") as tar,
            tqdm(
                total=expected,
                unit="file",
                desc=f"unpacking {archive.name} (tarfile)",
                disable=quiet,
            ) as bar,
        ):

            def members() -> Iterator[tarfile.TarInfo]:
                for member in tar:
                    yield member
                    if member.isfile():
                        bar.update(1)

            # extractall (not extract per member) sets folder permissions last.
            tar.extractall(into, members=members(), filter="data")
    except tarfile.FilterError as exc:
        raise DatasetError(f"{archive}: refused an unsafe archive member ({exc})") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(
            f"{archive}: cannot unpack, the archive looks corrupt or truncated "
            f"({type(exc).__name__}: {exc}); expected a complete .tar.bz2 file"
        ) from None


def unpack(
    archive: str | os.PathLike[str],
    *,
    expected_files: int | None = None,
    existing_names: Sequence[str] = (),
    use_pbzip2: bool | None = None,
    quiet: bool = False,
) -> Path:
    """Unpack ``archive`` beside itself and return the folder it became.

    An archive with a single top folder becomes that folder (``omniglot.tar.bz2`` →
    ``omniglot_dataset/``); anything else becomes a folder named after the archive.
    ``expected_files`` defaults to :data:`KNOWN_FILE_COUNTS` for known archives.
    ``existing_names``: folders beside the archive that mean "already unpacked" (checked
    again once the lock is held, so a concurrent unpack is not repeated).
    ``use_pbzip2``: None picks pbzip2 when available; False forces :mod:`tarfile`.
    Raises :class:`DatasetError` naming the archive for a missing, corrupt or truncated
    archive, or a wrong file count.
    """
    archive = Path(archive).resolve()
    if not archive.is_file():
        raise DatasetError(f"{archive}: archive not found")
    if expected_files is None:
        expected_files = KNOWN_FILE_COUNTS.get(archive.name)
    if use_pbzip2 is None:
        use_pbzip2 = pbzip2_available()
    with _locked(archive):
        for name in existing_names:
            if (archive.parent / name).is_dir():
                return archive.parent / name
        temp = _temp_folder(archive)
        if temp.exists():  # left by a killed unpack; nobody else holds the lock
            shutil.rmtree(temp)
        temp.mkdir()
        try:
            extract = _extract_pbzip2 if use_pbzip2 else _extract_tarfile
            extract(archive, temp, expected_files, quiet)
            found = _count_files(temp)
            if found == 0 or (expected_files is not None and found != expected_files):
                wanted = f"{expected_files:,}" if expected_files is not None else "at least 1"
                raise DatasetError(
                    f"{archive}: unpacked {found:,} files but expected {wanted}; "
                    "the archive is incomplete or not the expected data set"
                )
            entries = list(temp.iterdir())
            if len(entries) == 1 and entries[0].is_dir():
                source, target = entries[0], archive.parent / entries[0].name
            else:
                source, target = temp, archive.parent / archive.name.removesuffix(ARCHIVE_SUFFIX)
            if target.exists():
                raise DatasetError(
                    f"{archive}: unpacks to {target}, which already exists; "
                    "remove it or point dataset_path at it"
                )
            os.replace(source, target)
            fsync_dir(archive.parent)
        finally:
            if temp.exists():
                shutil.rmtree(temp)
    return target


__all__ = ["KNOWN_FILE_COUNTS", "archive_sha256", "pbzip2_available", "unpack"]
