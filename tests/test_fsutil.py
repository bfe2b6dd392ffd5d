"""Atomic writes: all or nothing, and files as readable as a plain open() makes them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from metasuite.fsutil import atomic_open, write_text_atomic


def test_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    write_text_atomic(target, "first")
    write_text_atomic(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_failure_mid_write_keeps_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.bin"
    write_text_atomic(target, "good")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_mode_follows_umask_not_mkstemp(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = tmp_path / "config.json"
        write_text_atomic(target, "{}")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_a_read_only_folder_is_one_user_error_naming_it(tmp_path):
    from metasuite.errors import UserError
    from metasuite.fsutil import NotWritableError, make_dirs
    from readonly_helpers import read_only_folder

    with read_only_folder(tmp_path / "ro") as ro:
        for attempt in (
            lambda: write_text_atomic(ro / "a.txt", "x"),
            lambda: write_text_atomic(ro / "deep" / "er" / "a.txt", "x"),
            lambda: make_dirs(ro / "sub"),
        ):
            with pytest.raises(NotWritableError) as info:
                attempt()
            assert isinstance(info.value, UserError)
            assert str(info.value).startswith(f"{ro}: cannot write here")
        assert list(ro.iterdir()) == []


def test_disk_full_is_one_line_and_keeps_previous_file(tmp_path: Path) -> None:
    from disk_helpers import fill, small_tmpfs
    from metasuite.errors import DiskFullError, ExitCode

    with small_tmpfs(tmp_path / "small", "1m") as small:
        target = small / "ckpt.bin"
        write_text_atomic(target, "good")
        fill(small)
        with pytest.raises(DiskFullError) as caught:
            write_text_atomic(target, "x" * 200_000)
        assert str(caught.value).startswith(f"no space left on {small}")
        assert f"writing {target}" in str(caught.value)
        assert caught.value.exit_code == ExitCode.FAILED
        assert target.read_text() == "good"
        assert sorted(p.name for p in small.iterdir()) == ["ckpt.bin", "filler.bin"]


# ------------------------------------------------ one classification (issue 29)
def test_torch_save_on_a_full_disk_is_disk_full_not_a_runtime_error(tmp_path: Path) -> None:
    """torch's zip writer turns the ENOSPC into RuntimeError("unexpected pos ...")."""
    import torch

    from disk_helpers import fill, small_tmpfs
    from metasuite.errors import DiskFullError
    from metasuite.fsutil import write_with_atomic

    with small_tmpfs(tmp_path / "small", "2m") as small:
        fill(small, leave_bytes=100_000)
        target = small / "cache.pt"
        with pytest.raises(DiskFullError, match=rf"^no space left on {small}.* writing {target}"):
            write_with_atomic(target, lambda h: torch.save({"x": torch.zeros(500_000)}, h))
        assert sorted(p.name for p in small.iterdir()) == ["filler.bin"]


def _raised_while_handling(context: BaseException, exc: BaseException) -> BaseException:
    try:
        try:
            raise context
        except BaseException:
            raise exc  # noqa: B904 (the implicit context is what is being tested)
    except BaseException as caught:
        return caught


def test_write_fault_is_one_classification(tmp_path: Path) -> None:
    import errno

    from metasuite.errors import DiskFullError, EnvironmentFault, ExitCode
    from metasuite.fsutil import NotWritableError, write_fault

    target = tmp_path / "x.pt"
    full = OSError(errno.ENOSPC, "No space left on device")
    wrapped = _raised_while_handling(full, RuntimeError("unexpected pos 704 vs 598"))
    assert isinstance(write_fault(wrapped, target), DiskFullError)
    io = write_fault(OSError(errno.EIO, "Input/output error"), target)
    assert type(io) is EnvironmentFault and io.exit_code == ExitCode.FAILED
    assert str(io) == f"cannot write {target}: Input/output error; check the storage and rerun"
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    in_the_way = write_fault(NotADirectoryError(errno.ENOTDIR, "Not a directory"), blocker / "x")
    assert isinstance(in_the_way, NotWritableError) and in_the_way.exit_code == 2
    assert str(in_the_way).startswith(f"{blocker}: is a file, not a folder")
    # Bugs keep their traceback: not an OS error, or one that is not the environment's.
    assert write_fault(RuntimeError("shape mismatch"), target) is None
    assert write_fault(KeyError("k"), target) is None
    assert write_fault(FileNotFoundError(errno.ENOENT, "gone"), target) is None
    # Already classified: left as it is.
    assert write_fault(DiskFullError("no space"), target) is None


def test_make_dirs_over_a_file_names_the_file(tmp_path: Path) -> None:
    from metasuite.fsutil import NotWritableError, make_dirs

    blocker = tmp_path / "report.md"
    blocker.write_text("mine")
    for folder in (blocker, blocker / "sub"):
        with pytest.raises(NotWritableError, match=rf"^{blocker}: is a file, not a folder"):
            make_dirs(folder)
    assert blocker.read_text() == "mine"
