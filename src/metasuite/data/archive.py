"""Unpack a data set archive so that a half-done unpack never looks done.

Formats, by file name: ``.tar.bz2``, ``.tar.gz``/``.tgz``, ``.tar``, ``.zip``, and a zip
that holds one of the tar formats (``.tar.gz.zip``, the way mini-ImageNet is passed
around). The file's first bytes must match its name; anything else is refused as "not
a ... archive" before any work is done.

The archive is extracted into a hidden temporary folder beside it and only renamed into
place once extraction has finished and the file count is right; a killed unpack leaves
just the temporary folder, which the next attempt deletes. An exclusive lock file
serialises concurrent attempts (two experiments started at once, parallel test runs), so
one never deletes the temporary folder another is still filling.

``tar -I pbzip2`` (``.tar.bz2``) and ``tar -I pigz`` (``.tar.gz``) decompress faster than
Python; without them :mod:`tarfile` and :mod:`zipfile` do the same job on one core.
Members that would land outside the target (``..``, absolute paths) and links of any
kind are refused, whichever extractor runs: a data set has no use for them, and refusing
is simpler to trust than rewriting them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from metasuite.errors import DatasetError
from metasuite.fsutil import disk_full, flocked, fsync_dir, is_disk_full, writing
from metasuite.progress import progress_bar

KNOWN_FILE_COUNTS: dict[str, int] = {
    "omniglot.tar.bz2": 32_460,  # 1,623 characters x 20 drawings
    "omniglot_dataset.tar.bz2": 32_460,
    "mini_imagenet_full_size.tar.bz2": 60_000,  # 100 classes x 600 images
    "wordnet_glosses.tar.bz2": 2,  # the glosses (JSON lines) and WordNet's licence
}
"""Files the real archives hold, by archive file name: a repacked or partial copy of a
known data set is refused instead of silently training on fewer classes."""

UNPACKED_RECORD = ".metasuite-unpacked.json"
"""Written into a folder unpacked from an archive of known size: the archive's name and
file count, so the folder is checked against it even when the archive is gone."""

ARCHIVE_SUFFIX = ".tar.bz2"
"""The reference repository's format (and the only one whose lone top folder keeps its
own name when unpacked, as it always has)."""

TAR_SUFFIXES: tuple[str, ...] = (".tar.bz2", ".tar.gz", ".tgz", ".tar")
ARCHIVE_SUFFIXES: tuple[str, ...] = (
    *TAR_SUFFIXES,
    *(suffix + ".zip" for suffix in TAR_SUFFIXES),
    ".zip",
)
"""Every archive name ending understood, longest match first (``x.tar.gz.zip`` is a zip
holding ``x.tar.gz``, not a zip called ``x.tar.gz``)."""

_SIGNATURES: dict[str, tuple[str, Callable[[bytes], bool]]] = {
    ".tar.bz2": ("bzip2", lambda head: head.startswith(b"BZh")),
    ".tar.gz": ("gzip", lambda head: head.startswith(b"\x1f\x8b")),
    ".tar": ("tar", lambda head: head[257:262] == b"ustar"),
    ".zip": ("zip", lambda head: head[:4] in (b"PK\x03\x04", b"PK\x05\x06")),
}
_TARFILE_MODES = {".tar.bz2": "r:bz2", ".tar.gz": "r:gz", ".tar": "r:"}
_FAST_DECOMPRESSORS = {".tar.bz2": "pbzip2", ".tar.gz": "pigz"}


def archive_suffix(name: str) -> str | None:
    """The archive ending of file ``name`` (one of :data:`ARCHIVE_SUFFIXES`), or None."""
    lowered = name.lower()
    return next((s for s in ARCHIVE_SUFFIXES if lowered.endswith(s)), None)


def archive_stem(name: str) -> str:
    """``name`` without its archive ending (``mini.tar.gz.zip`` -> ``mini``)."""
    suffix = archive_suffix(name)
    return name[: -len(suffix)] if suffix else name


def _format_of(suffix: str) -> str:
    """The container format a suffix is opened as (``.tgz`` is ``.tar.gz``)."""
    if suffix.endswith(".zip"):
        return ".zip"
    return ".tar.gz" if suffix == ".tgz" else suffix


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


def _fast_decompressor(fmt: str) -> str | None:
    tool = _FAST_DECOMPRESSORS.get(fmt)
    if tool is None or shutil.which(tool) is None or shutil.which("tar") is None:
        return None
    return tool


def _temp_folder(archive: Path) -> Path:
    # A fixed name (not per process): the next attempt must find a killed one's leftovers.
    return archive.parent / f".{archive.name}.unpacking"


@contextlib.contextmanager
def _locked(archive: Path) -> Iterator[None]:
    """Serialise unpacks of ``archive``: an flock on the archive itself, so no lock file
    is left beside it (a hidden ``.<archive>.lock`` only where flock needs a writable
    file, as on NFS)."""
    lock_path = archive.parent / f".{archive.name}.lock"
    held = contextlib.ExitStack()
    try:
        held.enter_context(flocked(archive, lock_path))
    except OSError as exc:
        raise DatasetError(
            f"{archive}: cannot lock it for unpacking ({exc.strerror}); "
            "is the data set folder writable?"
        ) from None
    with held:
        yield


def _scan_tree(folder: Path) -> tuple[int, str | None]:
    """(number of regular files, first link found or None) under ``folder``: the check
    that ``tar -I`` made no symbolic or hard link (tarfile and zipfile refuse them while
    extracting)."""
    files = 0
    pending = [folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    return files, os.path.relpath(entry.path, folder)
                if entry.is_dir():
                    pending.append(Path(entry.path))
                elif entry.stat(follow_symlinks=False).st_nlink > 1:  # a hard link (GNU tar)
                    return files, os.path.relpath(entry.path, folder)
                else:
                    files += 1
    return files, None


def _corrupt(archive: Path, detail: str, suffix: str) -> DatasetError:
    return DatasetError(
        f"{archive}: cannot unpack, the archive looks corrupt or truncated ({detail}); "
        f"expected a complete {suffix} file"
    )


def _unsafe(archive: Path, member: str, why: str) -> DatasetError:
    return DatasetError(
        f"{archive}: refused an unsafe archive member {member!r} ({why}); a data set archive "
        "holds only plain files and folders inside its own folder"
    )


def _check_signature(archive: Path, fmt: str, suffix: str) -> None:
    kind, matches = _SIGNATURES[fmt]
    with open(archive, "rb") as handle:
        head = handle.read(512)
    if not matches(head):
        raise DatasetError(
            f"{archive}: cannot unpack, the file is not a {kind} archive although it is "
            f"named {suffix} (corrupt, truncated to nothing, or renamed)"
        )


def _member_problem(name: str) -> str | None:
    """Why a member name would escape the target folder, or None."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "'..' in its path"
    return None


# --------------------------------------------------------------------------- tar
def _extract_tar_command(
    archive: Path, into: Path, tool: str, expected: int | None, quiet: bool, suffix: str
) -> None:
    command = ["tar", "-I", tool, "--no-same-owner", "-xvf", str(archive), "-C", str(into)]
    # stderr goes to a file, not a pipe: tar can warn once per member (clock skew), and a
    # full pipe nobody reads would block it forever.
    with (
        tempfile.TemporaryFile() as errors,
        progress_bar(
            total=expected, unit="file", desc=f"unpacking {archive.name} ({tool})", quiet=quiet
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
    if "Removing leading" in stderr:  # GNU tar makes absolute names relative; we refuse
        line = next(x for x in stderr.splitlines() if "Removing leading" in x)
        raise _unsafe(archive, line.split(":", 1)[-1].strip(), "absolute path")
    if code != 0:
        detail = " ".join(stderr.strip().splitlines()[-3:]) or f"exit status {code}"
        if "contains '..'" in stderr or "Member name contains" in stderr:
            raise _unsafe(archive, detail, "'..' in its path")
        if os.strerror(errno.ENOSPC) in stderr or os.strerror(errno.EDQUOT) in stderr:
            raise disk_full(into)
        raise _corrupt(archive, f"tar -I {tool}: {detail}", suffix)


def _strict_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    problem = _member_problem(member.name)
    if problem is None and (member.issym() or member.islnk()):
        problem = f"a link to {member.linkname!r}"
    if problem is None and not (member.isfile() or member.isdir()):
        problem = "not a plain file or folder"
    if problem is not None:
        raise tarfile.FilterError(f"{member.name!r}: {problem}")
    return tarfile.data_filter(member, dest)


def _extract_tarfile(
    archive: Path, into: Path, fmt: str, expected: int | None, quiet: bool, suffix: str
) -> None:
    try:
        with (
            tarfile.open(archive, _TARFILE_MODES[fmt]) as tar,
            progress_bar(
                total=expected,
                unit="file",
                desc=f"unpacking {archive.name} (tarfile)",
                quiet=quiet,
            ) as bar,
        ):

            def members() -> Iterator[tarfile.TarInfo]:
                for member in tar:
                    yield member
                    if member.isfile():
                        bar.update(1)

            # extractall (not extract per member) sets folder permissions last.
            tar.extractall(into, members=members(), filter=_strict_filter)
    except tarfile.FilterError as exc:
        raise DatasetError(
            f"{archive}: refused an unsafe archive member ({exc}); a data set archive "
            "holds only plain files and folders inside its own folder"
        ) from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if is_disk_full(exc):
            raise disk_full(into) from None
        raise _corrupt(archive, f"{type(exc).__name__}: {exc}", suffix) from None


def _extract_tar(
    archive: Path,
    into: Path,
    fmt: str,
    expected: int | None,
    quiet: bool,
    fast: bool,
    suffix: str,
) -> None:
    _check_signature(archive, fmt, suffix)
    tool = _fast_decompressor(fmt) if fast else None
    if tool is not None:
        _extract_tar_command(archive, into, tool, expected, quiet, suffix)
    else:
        _extract_tarfile(archive, into, fmt, expected, quiet, suffix)


# --------------------------------------------------------------------------- zip
def _zip_member_is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _extract_zip(
    archive: Path, into: Path, expected: int | None, quiet: bool, fast: bool, suffix: str
) -> None:
    _check_signature(archive, ".zip", suffix)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                problem = _member_problem(info.filename)
                if problem is None and _zip_member_is_link(info):
                    problem = "a link"
                if problem is not None:
                    raise _unsafe(archive, info.filename, problem)
            files = [
                i
                for i in infos
                if not i.is_dir()
                and not PurePosixPath(i.filename).name.startswith(".")
                and not i.filename.startswith("__MACOSX/")
            ]
            inner = archive_suffix(files[0].filename) if len(files) == 1 else None
            if inner is not None and _format_of(inner) != ".zip":
                # A zip holding one tar archive: unpack that into the same folder.
                inner_path = into / f".inner{inner}"
                with zf.open(files[0]) as src, open(inner_path, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                try:
                    _extract_tar(inner_path, into, _format_of(inner), expected, quiet, fast, inner)
                except DatasetError as exc:
                    raise DatasetError(
                        str(exc).replace(
                            str(inner_path), f"{archive} (inside: {files[0].filename})"
                        )
                    ) from None
                finally:
                    inner_path.unlink(missing_ok=True)
                return
            with progress_bar(
                total=expected or len(files),
                unit="file",
                desc=f"unpacking {archive.name} (zipfile)",
                quiet=quiet,
            ) as bar:
                for info in infos:
                    zf.extract(info, into)  # names were checked above
                    if not info.is_dir():
                        bar.update(1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        if is_disk_full(exc):
            raise disk_full(into) from None
        raise _corrupt(archive, f"{type(exc).__name__}: {exc}", suffix) from None


# --------------------------------------------------------------------------- unpack
def unpack(
    archive: str | os.PathLike[str],
    *,
    expected_files: int | None = None,
    existing_names: Sequence[str] = (),
    use_pbzip2: bool | None = None,
    quiet: bool = False,
) -> Path:
    """Unpack ``archive`` beside itself and return the folder it became.

    A ``.tar.bz2`` with a single top folder becomes that folder (``omniglot.tar.bz2`` →
    ``omniglot_dataset/``), as in the reference repository. Every other archive becomes
    a folder named after the archive (``mini_imagenet.tar.gz.zip`` → ``mini_imagenet/``),
    a lone top folder inside it taking that name: so ``dataset_path`` names the folder
    whatever the packer called its top folder.
    ``expected_files`` defaults to :data:`KNOWN_FILE_COUNTS` for known archives.
    ``existing_names``: folders beside the archive that mean "already unpacked" (checked
    again once the lock is held, so a concurrent unpack is not repeated).
    ``use_pbzip2``: None uses ``tar -I pbzip2``/``pigz`` when available; False forces
    Python's :mod:`tarfile`.
    Raises :class:`DatasetError` naming the archive for a missing, corrupt, truncated or
    unsafe archive, or a wrong file count.
    """
    archive = Path(archive).resolve()
    if not archive.is_file():
        raise DatasetError(f"{archive}: archive not found")
    suffix = archive_suffix(archive.name)
    if suffix is None:
        raise DatasetError(
            f"{archive}: not a known archive name; expected one ending in "
            + ", ".join(ARCHIVE_SUFFIXES)
        )
    if expected_files is None:
        expected_files = KNOWN_FILE_COUNTS.get(archive.name)
    fast = pbzip2_available() if use_pbzip2 is None else use_pbzip2
    # Every write of the unpack (lock, temp folder, files, rename) beside the archive:
    # a read-only or full data folder is one line, not an OS traceback.
    with writing(archive.parent), _locked(archive):
        for name in existing_names:
            if (archive.parent / name).is_dir():
                return archive.parent / name
        temp = _temp_folder(archive)
        if temp.exists():  # left by a killed unpack; nobody else holds the lock
            shutil.rmtree(temp)
        temp.mkdir()
        try:
            fmt = _format_of(suffix)
            if fmt == ".zip":
                _extract_zip(archive, temp, expected_files, quiet, fast, suffix)
            else:
                _extract_tar(archive, temp, fmt, expected_files, quiet, fast, suffix)
            found, link = _scan_tree(temp)
            if link is not None:
                raise _unsafe(archive, link, "a link")
            if found == 0 or (expected_files is not None and found != expected_files):
                wanted = f"{expected_files:,}" if expected_files is not None else "at least 1"
                raise DatasetError(
                    f"{archive}: unpacked {found:,} files but expected {wanted}; "
                    "the archive is incomplete or not the expected data set"
                )
            entries = [e for e in temp.iterdir() if e.name != "__MACOSX"]
            lone = entries[0] if len(entries) == 1 and entries[0].is_dir() else None
            if lone is not None and suffix == ARCHIVE_SUFFIX:
                source, target = lone, archive.parent / lone.name
            else:
                source = lone if lone is not None else temp
                target = archive.parent / archive_stem(archive.name)
            if target.exists():
                raise DatasetError(
                    f"{archive}: unpacks to {target}, which already exists; "
                    "remove it or point dataset_path at it"
                )
            if expected_files is not None:
                # What the folder must go on holding, readable without the archive
                # (metasuite.data.folders.check_complete).
                record = {"archive": archive.name, "files": found}
                (source / UNPACKED_RECORD).write_text(json.dumps(record) + "\n")
            os.replace(source, target)
            fsync_dir(archive.parent)
        finally:
            if temp.exists():
                shutil.rmtree(temp)
    return target


__all__ = [
    "ARCHIVE_SUFFIXES",
    "KNOWN_FILE_COUNTS",
    "UNPACKED_RECORD",
    "archive_sha256",
    "archive_stem",
    "archive_suffix",
    "pbzip2_available",
    "unpack",
]
