"""Checkpoint files: round trip, damage detection, fallback, pruning, a kill mid-save."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from metasuite.errors import UserError
from metasuite.training.checkpoint import (
    FORMAT_VERSION,
    CheckpointStore,
    CorruptCheckpointError,
    decode,
    encode,
    load_checkpoint,
    save_checkpoint,
)
from metasuite.training.runtime import capture_rng_state, restore_rng_state


def _payload(value: float) -> dict:
    return {
        "weights": torch.full((3, 4), value),
        "counters": {"epoch": 1, "iteration": 7},
        "history": [{"epoch": 0, "accuracy": 0.25}],
        "name": "x",
        "missing": None,
    }


def test_round_trip_is_exact(tmp_path: Path) -> None:
    payload = _payload(0.1)
    payload["rng"] = capture_rng_state()
    save_checkpoint(tmp_path / "a.pt", payload)
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(loaded["weights"], payload["weights"])
    assert loaded["counters"] == payload["counters"]
    assert loaded["history"] == payload["history"]
    assert loaded["missing"] is None


def test_file_loads_with_plain_torch_load_weights_only(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a.pt", _payload(1.0))
    outer = torch.load(tmp_path / "a.pt", weights_only=True)
    inner = torch.load(io.BytesIO(outer["body"]), weights_only=True)
    assert inner["format_version"] == FORMAT_VERSION
    assert torch.equal(inner["payload"]["weights"], torch.full((3, 4), 1.0))


def test_truncated_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.pt"
    save_checkpoint(path, _payload(1.0))
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptCheckpointError):
            load_checkpoint(path)


def test_flipped_bytes_never_load_as_different_data() -> None:
    """Damage anywhere: either detected, or (zip padding, unused header bytes) harmless."""
    original = _payload(2.0)
    data = encode(original)
    detected = 0
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        try:
            loaded = decode(bytes(damaged))
        except CorruptCheckpointError:
            detected += 1
            continue
        assert torch.equal(loaded["weights"], original["weights"]), position
        assert {k: v for k, v in loaded.items() if k != "weights"} == {
            k: v for k, v in original.items() if k != "weights"
        }, position
    # Every byte of the checksummed body is covered, and the body is most of the file.
    body_size = len(torch.load(io.BytesIO(data), weights_only=True)["body"])
    assert detected >= body_size


def test_checksum_mismatch_is_reported_as_damage() -> None:
    inner = io.BytesIO()
    torch.save({"a": torch.zeros(2)}, inner)
    outer = io.BytesIO()
    body = inner.getvalue()
    torch.save({"format": "metasuite-checkpoint", "sha256": "0" * 64, "body": body}, outer)
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        decode(outer.getvalue())


def test_other_format_version_is_a_user_error_not_damage() -> None:
    inner = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION + 1, "payload": {}}, inner)
    body = inner.getvalue()
    outer = io.BytesIO()
    digest = hashlib.sha256(body).hexdigest()
    torch.save({"format": "metasuite-checkpoint", "sha256": digest, "body": body}, outer)
    with pytest.raises(UserError, match="format version"):
        decode(outer.getvalue())


class _NotAllowed:
    pass


def test_payload_that_weights_only_refuses_is_a_bug_not_damage() -> None:
    """A good checksum means the bytes are intact: a load failure then must surface."""
    data = encode({"obj": _NotAllowed()})
    with pytest.raises(pickle.UnpicklingError):
        decode(data)


def test_rng_state_survives_a_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = (torch.rand(5), np.random.standard_normal(3), random.random(), random.gauss(0, 1))
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (torch.rand(5), np.random.standard_normal(3), random.random(), random.gauss(0, 1))
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def _store_with(tmp_path: Path) -> CheckpointStore:
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(_payload(1.0), iteration=2, epoch_end=None)
    store.save(_payload(2.0), iteration=4, epoch_end=0)
    store.save(_payload(3.0), iteration=6, epoch_end=None)
    store.save(_payload(4.0), iteration=8, epoch_end=1)
    return store


def test_files_are_ordered_by_iteration(tmp_path: Path) -> None:
    store = _store_with(tmp_path)
    store.save(_payload(5.0), iteration=8, epoch_end=None)  # same iteration, mid-epoch
    names = [f.path.name for f in store.files()]
    assert names == [
        "iter_00000002.pt",
        "epoch_0000_iter_00000004.pt",
        "iter_00000006.pt",
        "iter_00000008.pt",
        "epoch_0001_iter_00000008.pt",
    ]
    assert sorted(store.epoch_files()) == [0, 1]


def test_load_latest_falls_back_past_damaged_files(tmp_path: Path, caplog) -> None:
    store = _store_with(tmp_path)
    newest = store.files()[-1].path
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    second = store.files()[-2].path
    second.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="metasuite.training.checkpoint"):
        ckpt, payload = store.load_latest()
    assert ckpt.iteration == 4 and ckpt.epoch_end == 0
    assert torch.equal(payload["weights"], torch.full((3, 4), 2.0))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2
    assert newest.name in warned[0] and "falling back" in warned[0]


def test_load_latest_none_when_empty_and_error_when_all_damaged(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    assert store.load_latest() is None
    store.save(_payload(1.0), iteration=1, epoch_end=None)
    store.files()[0].path.write_bytes(b"")
    with pytest.raises(UserError, match="damaged"):
        store.load_latest()


def test_load_epoch_names_available_epochs(tmp_path: Path) -> None:
    store = _store_with(tmp_path)
    ckpt, payload = store.load_epoch(1)
    assert ckpt.iteration == 8
    assert torch.equal(payload["weights"], torch.full((3, 4), 4.0))
    with pytest.raises(UserError, match=r"epochs available: 0, 1"):
        store.load_epoch(5)


def test_prune_keeps_recent_and_best_epochs(tmp_path: Path) -> None:
    store = _store_with(tmp_path)
    store.save(_payload(6.0), iteration=10, epoch_end=None)
    removed = store.prune(keep_epochs=[0], keep_recent=2)
    assert sorted(p.name for p in removed) == ["iter_00000002.pt", "iter_00000006.pt"]
    assert [f.path.name for f in store.files()] == [
        "epoch_0000_iter_00000004.pt",
        "epoch_0001_iter_00000008.pt",
        "iter_00000010.pt",
    ]


def test_remove_newer_than(tmp_path: Path) -> None:
    store = _store_with(tmp_path)
    store.remove_newer_than(4)
    assert [f.iteration for f in store.files()] == [2, 4]


def test_kill_during_save_keeps_previous_checkpoint(tmp_path: Path) -> None:
    """SIGKILL between writing the temporary file and renaming it: the old file stays."""
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(_payload(1.0), iteration=1, epoch_end=None)
    script = textwrap.dedent(
        f"""
        import torch
        from metasuite.training.checkpoint import CheckpointStore
        store = CheckpointStore({str(store.folder)!r})
        store.save({{"weights": torch.ones(1000)}}, iteration=2, epoch_end=None)
        """
    )
    env = dict(os.environ, METASUITE_FAULT="checkpoint-write:1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert [f.iteration for f in store.files()] == [1]
    temps = [p for p in store.folder.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].stat().st_size > 0  # the unfinished write
    ckpt, payload = store.load_latest()
    assert ckpt.iteration == 1
    assert torch.equal(payload["weights"], torch.full((3, 4), 1.0))
    assert store.remove_temp_files() == 1
    assert not [p for p in store.folder.iterdir() if p.name.endswith(".tmp")]


def test_cuda_rng_states_for_another_gpu_count_warn_instead_of_silently_skipping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = capture_rng_state()
    state["cuda"] = [torch.zeros(8, dtype=torch.uint8)] * 2  # saved on two GPUs
    restored: list[object] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    with pytest.warns(UserWarning, match="2 GPU.*1 are visible"):
        restore_rng_state(state)
    assert restored == []
