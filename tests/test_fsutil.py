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
