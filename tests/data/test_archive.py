"""Unpacking data set archives: both extractors, counts, corrupt input, interrupted runs."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from data_helpers import make_archive, omniglot_subset, pack
from metasuite.config import REPO_ROOT
from metasuite.data import archive as archive_mod
from metasuite.data.archive import UNPACKED_RECORD, archive_sha256, pbzip2_available, unpack
from metasuite.errors import DatasetError

REAL_ARCHIVE = REPO_ROOT / "datasets" / "omniglot.tar.bz2"
needs_pbzip2 = pytest.mark.skipif(not pbzip2_available(), reason="pbzip2 not installed")
EXTRACTORS = [
    pytest.param(True, id="pbzip2", marks=needs_pbzip2),
    pytest.param(False, id="tarfile"),
]


def _tree(folder: Path) -> dict[str, bytes]:
    """The unpacked files, less the record the unpack adds (archive_mod.UNPACKED_RECORD)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != archive_mod.UNPACKED_RECORD
    }


@pytest.fixture(scope="module")
def small_archive(omniglot_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real-Omniglot subset packed like the real archive (top folder omniglot_dataset/)."""
    work = tmp_path_factory.mktemp("small_archive")
    count = omniglot_subset(omniglot_folder, work / "omniglot_dataset")
    assert count == 2 * 2 * 3 * 20
    return make_archive(work / "small.tar.bz2", work / "omniglot_dataset")


def _copy(archive: Path, folder: Path, name: str = "small.tar.bz2") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(archive, folder / name))


@pytest.mark.parametrize("use_pbzip2", EXTRACTORS)
def test_both_extractors_give_the_same_tree(
    small_archive: Path, tmp_path: Path, omniglot_folder: Path, use_pbzip2: bool
) -> None:
    archive = _copy(small_archive, tmp_path)
    folder = unpack(archive, expected_files=240, use_pbzip2=use_pbzip2, quiet=True)
    assert folder == tmp_path / "omniglot_dataset"
    tree = _tree(folder)
    assert len(tree) == 240
    assert all(data == (omniglot_folder / rel).read_bytes() for rel, data in tree.items())
    record = (folder / archive_mod.UNPACKED_RECORD).read_text()
    assert json.loads(record) == {"archive": "small.tar.bz2", "files": 240}
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["omniglot_dataset", "small.tar.bz2"]


def test_fallback_when_pbzip2_is_not_on_path(
    small_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = archive_mod._extract_tarfile
    monkeypatch.setattr(
        archive_mod, "_extract_tarfile", lambda *a: (calls.append("tarfile"), real(*a))
    )
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert not pbzip2_available()
    folder = unpack(_copy(small_archive, tmp_path), expected_files=240, quiet=True)
    assert calls == ["tarfile"]
    assert len(_tree(folder)) == 240


@pytest.mark.parametrize("use_pbzip2", EXTRACTORS)
def test_truncated_archive_is_a_dataset_error(
    small_archive: Path, tmp_path: Path, use_pbzip2: bool
) -> None:
    archive = tmp_path / "cut.tar.bz2"
    data = small_archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut\.tar\.bz2.*(corrupt or truncated|expected)"):
        unpack(archive, use_pbzip2=use_pbzip2, quiet=True)
    assert not (tmp_path / "omniglot_dataset").exists()  # nothing half-done in place
    assert not (tmp_path / ".cut.tar.bz2.unpacking").exists()


@pytest.mark.parametrize("use_pbzip2", EXTRACTORS)
def test_garbage_archive_is_a_dataset_error(tmp_path: Path, use_pbzip2: bool) -> None:
    archive = tmp_path / "garbage.tar.bz2"
    archive.write_bytes(os.urandom(4096))
    with pytest.raises(DatasetError, match=r"garbage\.tar\.bz2: cannot unpack.*corrupt"):
        unpack(archive, use_pbzip2=use_pbzip2, quiet=True)


@pytest.mark.parametrize("use_pbzip2", EXTRACTORS)
def test_wrong_file_count_is_a_dataset_error(
    small_archive: Path, tmp_path: Path, use_pbzip2: bool
) -> None:
    # Named like the real archive, so the known count (32,460) applies.
    archive = _copy(small_archive, tmp_path, "omniglot.tar.bz2")
    with pytest.raises(
        DatasetError, match=r"omniglot\.tar\.bz2: unpacked 240 files but expected 32,460"
    ):
        unpack(archive, use_pbzip2=use_pbzip2, quiet=True)
    assert not (tmp_path / "omniglot_dataset").exists()
    assert not (tmp_path / ".omniglot.tar.bz2.unpacking").exists()


def test_missing_archive_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nothing\.tar\.bz2: archive not found"):
        unpack(tmp_path / "nothing.tar.bz2", quiet=True)


@pytest.mark.parametrize("use_pbzip2", EXTRACTORS)
def test_member_escaping_the_folder_is_refused(tmp_path: Path, use_pbzip2: bool) -> None:
    archive = tmp_path / "evil.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        payload = b"owned"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DatasetError, match=r"evil\.tar\.bz2"):
        unpack(archive, use_pbzip2=use_pbzip2, quiet=True)
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()


def test_leftover_of_a_killed_unpack_is_cleaned_up(small_archive: Path, tmp_path: Path) -> None:
    archive = _copy(small_archive, tmp_path)
    # What a kill mid-unpack leaves: a partly filled temporary folder, nothing in place.
    leftover = tmp_path / ".small.tar.bz2.unpacking" / "omniglot_dataset" / "images_background"
    leftover.mkdir(parents=True)
    (leftover / "half_written.png").write_bytes(b"\x89PNG")
    folder = unpack(archive, expected_files=240, quiet=True)
    assert len(_tree(folder)) == 240
    assert not (folder / "images_background" / "half_written.png").exists()
    assert not (tmp_path / ".small.tar.bz2.unpacking").exists()


def test_existing_folder_is_not_unpacked_again(small_archive: Path, tmp_path: Path) -> None:
    archive = _copy(small_archive, tmp_path)
    (tmp_path / "omniglot_dataset").mkdir()
    folder = unpack(archive, existing_names=["omniglot_dataset"], quiet=True)
    assert folder == tmp_path / "omniglot_dataset"
    assert list(folder.iterdir()) == []  # returned as found, not overwritten
    with pytest.raises(DatasetError, match="already exists"):
        unpack(archive, quiet=True)


def test_archive_without_a_single_top_folder_unpacks_into_its_own_name(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in ("a/x.png", "b/y.png"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"data")
    archive = tmp_path / "flat.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        tar.add(src / "a", arcname="a")
        tar.add(src / "b", arcname="b")
    folder = unpack(archive, quiet=True)
    assert folder == tmp_path / "flat"
    assert sorted(_tree(folder)) == ["a/x.png", "b/y.png"]


def test_archive_sha256_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    # sha256("abc") from FIPS 180-2, appendix B.1
    assert archive_sha256(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def _unpack_in_subprocess(archive: Path, *args: str) -> subprocess.Popen:
    code = (
        "import sys; from metasuite.data.archive import unpack; "
        "print(unpack(sys.argv[1], quiet=True, existing_names=['omniglot_dataset'], "
        "use_pbzip2=sys.argv[2] == 'pbzip2', expected_files=int(sys.argv[3])))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(archive), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow  # two unpacks of the real archive: ~4 s on a quiet 2-core machine, 30 s busy
def test_killed_unpack_is_never_taken_for_finished_and_the_next_one_recovers(
    tmp_path: Path,
) -> None:
    archive = _copy(REAL_ARCHIVE, tmp_path, "omniglot.tar.bz2")
    temp = tmp_path / ".omniglot.tar.bz2.unpacking"
    process = _unpack_in_subprocess(archive, "tarfile", "32460")  # the slow extractor
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if sum(1 for _ in temp.rglob("*.png")) > 100:
            break
        time.sleep(0.2)
    assert process.poll() is None, "unpack finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert temp.is_dir()  # the half-filled temporary folder is all that is left
    assert not (tmp_path / "omniglot_dataset").exists()
    # The next attempt (pbzip2 when installed) starts over and checks the real count.
    folder = unpack(archive, existing_names=["omniglot_dataset"], quiet=True)
    assert folder == tmp_path / "omniglot_dataset"
    # the images, and the record that a complete unpack leaves (issue 29: the folder is
    # checked against it whether or not the archive is still beside it)
    assert sum(len(files) for _, _, files in os.walk(folder)) == 32_460 + 1
    assert sorted(p.name for p in folder.iterdir()) == [
        UNPACKED_RECORD,
        "images_background",
        "images_evaluation",
    ]
    assert not temp.exists()


def test_concurrent_unpacks_share_one_result(small_archive: Path, tmp_path: Path) -> None:
    archive = _copy(small_archive, tmp_path)
    method = "pbzip2" if pbzip2_available() else "tarfile"
    processes = [_unpack_in_subprocess(archive, method, "240") for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert {out.strip() for out, _ in outputs} == {str(tmp_path / "omniglot_dataset")}
    assert len(_tree(tmp_path / "omniglot_dataset")) == 240
    assert not (tmp_path / ".small.tar.bz2.unpacking").exists()


# ------------------------------------------------------------------ other formats (issue 17)
FORMATS = [".tar.gz", ".tgz", ".tar", ".zip", ".tar.gz.zip", ".tar.bz2.zip", ".tar.zip"]
needs_pigz = pytest.mark.skipif(shutil.which("pigz") is None, reason="pigz not installed")


@pytest.mark.parametrize("suffix", FORMATS)
def test_every_format_unpacks_to_the_same_tree_named_after_the_archive(
    small_archive: Path, tmp_path: Path, omniglot_folder: Path, suffix: str
) -> None:
    source = tmp_path / "src"
    unpack(_copy(small_archive, source), quiet=True)
    archive = pack(source / "omniglot_dataset", tmp_path / f"mine{suffix}")
    folder = unpack(archive, expected_files=240, quiet=True)
    assert folder == tmp_path / "mine"  # its lone top folder takes the archive's name
    tree = _tree(folder)
    assert len(tree) == 240
    assert all(data == (omniglot_folder / rel).read_bytes() for rel, data in tree.items())
    record = (folder / archive_mod.UNPACKED_RECORD).read_text()
    assert json.loads(record) == {"archive": archive.name, "files": 240}
    assert not list(tmp_path.glob(".mine*.unpacking"))


@pytest.mark.parametrize("fast", [pytest.param(True, id="pigz", marks=needs_pigz), False])
def test_tar_gz_with_pigz_or_tarfile(small_archive: Path, tmp_path: Path, fast: bool) -> None:
    source = tmp_path / "src"
    unpack(_copy(small_archive, source), quiet=True)
    archive = pack(source / "omniglot_dataset", tmp_path / "mine.tar.gz")
    folder = unpack(archive, expected_files=240, use_pbzip2=fast, quiet=True)
    assert len(_tree(folder)) == 240


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar", ".zip", ".tar.gz.zip"])
def test_a_file_that_is_not_that_archive_is_refused_by_name(tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"fake{suffix}"
    archive.write_bytes(b"<html>404 Not Found</html>" * 40)  # a failed download
    kind = {".tar": "tar", ".tar.gz": "gzip", ".tgz": "gzip"}.get(suffix, "zip")
    with pytest.raises(DatasetError, match=rf"fake{re.escape(suffix)}: .*not a {kind} archive"):
        unpack(archive, quiet=True)
    assert not (tmp_path / "fake").exists()
    assert not list(tmp_path.glob(".*.unpacking"))


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip", ".tar.gz.zip"])
@pytest.mark.parametrize("fast", [pytest.param(True, id="fast", marks=needs_pigz), False])
def test_truncated_archive_of_any_format_is_refused(
    small_archive: Path, tmp_path: Path, suffix: str, fast: bool
) -> None:
    source = tmp_path / "src"
    unpack(_copy(small_archive, source), quiet=True)
    whole = pack(source / "omniglot_dataset", tmp_path / f"whole{suffix}")
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DatasetError, match=rf"cut{re.escape(suffix)}.*corrupt or truncated"):
        unpack(cut, expected_files=240, use_pbzip2=fast, quiet=True)
    assert not (tmp_path / "cut").exists()
    assert not list(tmp_path.glob(".cut*.unpacking"))


def _tar_with(archive: Path, member: tarfile.TarInfo, payload: bytes = b"") -> Path:
    mode = "w:gz" if archive.name.endswith(".tar.gz") else "w:bz2"
    with tarfile.open(archive, mode) as tar:
        ok = tarfile.TarInfo("data/a/ok.png")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(payload) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(payload) if payload else None)
    return archive


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info


HOSTILE_MEMBERS = {
    "dotdot": lambda: (tarfile.TarInfo("data/../../escaped.txt"), b"owned"),
    "absolute": lambda: (tarfile.TarInfo("/tmp/metasuite-absolute-escape.txt"), b"owned"),
    "symlink-out": lambda: (_symlink("data/a/link.png", "/etc/passwd"), b""),
    "symlink-in": lambda: (_symlink("data/a/link.png", "ok.png"), b""),
    "hardlink-in": lambda: (_hardlink("data/a/hard.png", "data/a/ok.png"), b""),
    "hardlink-out": lambda: (_hardlink("data/a/hard.png", "../../etc/passwd"), b""),
}


@pytest.mark.parametrize("kind", list(HOSTILE_MEMBERS))
@pytest.mark.parametrize(
    ("suffix", "fast"),
    [
        pytest.param(".tar.gz", True, id="pigz", marks=needs_pigz),
        pytest.param(".tar.gz", False, id="tarfile-gz"),
        pytest.param(".tar.bz2", True, id="pbzip2", marks=needs_pbzip2),
        pytest.param(".tar.bz2", False, id="tarfile-bz2"),
    ],
)
def test_tar_members_leaving_the_folder_or_links_are_refused(
    tmp_path: Path, kind: str, suffix: str, fast: bool
) -> None:
    member, payload = HOSTILE_MEMBERS[kind]()
    archive = _tar_with(tmp_path / f"evil{suffix}", member, payload)
    with pytest.raises(DatasetError, match=rf"evil{re.escape(suffix)}: refused an unsafe"):
        unpack(archive, use_pbzip2=fast, quiet=True)
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not Path("/tmp/metasuite-absolute-escape.txt").exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "data").exists()
    assert not list(tmp_path.glob(".*.unpacking"))


def _zip_with(archive: Path, name: str, payload: bytes = b"owned", link: bool = False) -> Path:
    import zipfile

    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/a/ok.png", b"ok")
        info = zipfile.ZipInfo(name)
        if link:
            info.external_attr = 0o120777 << 16  # S_IFLNK
        zf.writestr(info, payload)
    return archive


@pytest.mark.parametrize(
    ("name", "link"),
    [("data/../../escaped.txt", False), ("/tmp/metasuite-zip-escape.txt", False),
     ("data/a/link.png", True)],
    ids=["dotdot", "absolute", "symlink"],
)  # fmt: skip
def test_zip_members_leaving_the_folder_or_links_are_refused(
    tmp_path: Path, name: str, link: bool
) -> None:
    archive = _zip_with(tmp_path / "evil.zip", name, b"/etc/passwd" if link else b"owned", link)
    with pytest.raises(DatasetError, match=r"evil\.zip: refused an unsafe archive member"):
        unpack(archive, quiet=True)
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not Path("/tmp/metasuite-zip-escape.txt").exists()
    assert not (tmp_path / "evil").exists()


def test_hostile_tar_inside_a_zip_is_refused_naming_the_zip(tmp_path: Path) -> None:
    import zipfile

    inner = _tar_with(tmp_path / "inner.tar.gz", *HOSTILE_MEMBERS["dotdot"]())
    archive = tmp_path / "evil.tar.gz.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(inner, "mini.tar.gz")
    with pytest.raises(DatasetError, match=r"evil\.tar\.gz\.zip.*mini\.tar\.gz.*refused an unsafe"):
        unpack(archive, use_pbzip2=False, quiet=True)
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not (tmp_path / "evil").exists()


def test_unknown_archive_name_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "data.rar"
    archive.write_bytes(b"Rar!")
    with pytest.raises(DatasetError, match=r"data\.rar: not a known archive name.*\.tar\.gz"):
        unpack(archive, quiet=True)


@pytest.mark.parametrize("use_pbzip2", EXTRACTORS)
def test_disk_full_while_unpacking_is_reported_as_disk_full(
    tmp_path: Path, use_pbzip2: bool
) -> None:
    """The real archive on a file system with room for it but not for its 134 MB of
    images: "no space left", not "corrupt archive", and nothing half-unpacked kept."""
    from disk_helpers import small_tmpfs
    from metasuite.errors import DiskFullError

    with small_tmpfs(tmp_path / "small", "8m") as small:
        copy = small / REAL_ARCHIVE.name
        shutil.copyfile(REAL_ARCHIVE, copy)
        with pytest.raises(DiskFullError, match=f"^no space left on {small}") as caught:
            unpack(copy, use_pbzip2=use_pbzip2, quiet=True)
        assert "corrupt" not in str(caught.value)
        assert sorted(p.name for p in small.iterdir() if not p.name.endswith(".lock")) == [
            copy.name
        ]


def test_unpacking_leaves_no_lock_file_beside_the_archive(
    small_archive: Path, tmp_path: Path
) -> None:
    """The unpack lock is an flock on the archive itself (a lock file only where the file
    system needs one, as NFS does)."""
    archive = _copy(small_archive, tmp_path)
    unpack(archive, expected_files=240, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name, "omniglot_dataset"])


def test_a_read_only_data_folder_holding_only_the_archive_is_one_line(
    small_archive: Path, tmp_path: Path
) -> None:
    """Issue 29: an EROFS traceback before. Nothing can be unpacked beside the archive:
    one line naming the folder (exit 2)."""
    from disk_helpers import small_tmpfs
    from metasuite.fsutil import NotWritableError

    with small_tmpfs(tmp_path / "ro", "4m") as folder:
        archive = _copy(small_archive, folder)
        remount = subprocess.run(
            ["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True
        )
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {remount.stderr.strip()}")
        with pytest.raises(NotWritableError, match=rf"^{folder}: cannot write here \(Read-only"):
            unpack(archive, expected_files=240, quiet=True)
        assert [p.name for p in folder.iterdir()] == [archive.name]
