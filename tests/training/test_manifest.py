"""manifest.json: the reproducibility record, and `metasuite show`."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
from datetime import datetime
from types import SimpleNamespace

import numpy
import pytest
import torch

import metasuite
from metasuite.cli import main
from metasuite.config import REPO_ROOT, config_hash, from_dict, load_config, save_config, to_dict
from metasuite.training import manifest as mf
from synthetic_experiments import make_config, write_experiment


def _git(repo, *args):
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _start(exp_dir, config, **kwargs):
    kwargs.setdefault("argv", ["metasuite", "train", "--config", "x.json"])
    kwargs.setdefault("devices", ["cpu"])
    return mf.start_run(exp_dir, config, **kwargs)


def test_run_entry_fields_are_present_and_true(tmp_path):
    config = make_config("exp", 3, test_seed=7)
    dataset = mf.DatasetInfo("omniglot_dataset", "/d", "/d.tar.bz2", "ab" * 32, "cd" * 32)
    argv = ["metasuite", "train", "--config", "exp.json", "--gpus", "cpu"]
    record = _start(tmp_path, config, argv=argv, dataset=dataset)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["format"] == 1 and on_disk["experiment_name"] == "exp"
    (run,) = on_disk["runs"]
    assert run == record.entry
    assert run["run"] == 1 and run["status"] == "running" and run["ended"] is None
    assert datetime.fromisoformat(run["started"])
    assert run["metasuite_version"] == metasuite.__version__
    sw = run["software"]
    assert sw["python"] == platform.python_version()
    assert sw["torch"] == torch.__version__
    assert sw["numpy"] == numpy.__version__
    assert sw["cuda"] == torch.version.cuda
    expected_cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    assert sw["cudnn"] == expected_cudnn
    assert run["devices"][0]["device"] == "cpu" and run["devices"][0]["name"]
    assert run["command"]["argv"] == argv and run["command"]["gpu_ids"] == []
    assert run["host"] == socket.gethostname()
    assert run["config_hash"] == config_hash(config)
    assert run["dataset"]["archive_sha256"] == "ab" * 32
    assert run["dataset"]["split_hash"] == "cd" * 32
    assert run["seeds"] == {"train_seed": 3, "val_seed": 3, "test_seed": 7}
    # The git record is that of this checkout.
    git = run["git"]
    assert git["commit"] == _git(REPO_ROOT, "rev-parse", "HEAD").strip()
    porcelain = _git(REPO_ROOT, "status", "--porcelain")
    assert git["dirty"] == bool(porcelain.strip())
    assert (git["diff_sha256"] is not None) == git["dirty"]


def test_finish_records_the_end_once(tmp_path):
    record = _start(tmp_path, make_config("exp", 0))
    assert record.finish("paused", "paused after 2 epochs")
    assert not mf.finish_run(tmp_path, "failed")  # the first outcome stands
    (run,) = mf.read_manifest(tmp_path)["runs"]
    assert run["status"] == "paused" and run["message"] == "paused after 2 epochs"
    assert datetime.fromisoformat(run["ended"]) >= datetime.fromisoformat(run["started"])
    with pytest.raises(ValueError, match="status must be one of"):
        mf.finish_run(tmp_path, "finished")


def test_resume_appends_a_run_and_marks_a_killed_one(tmp_path):
    config = make_config("exp", 0)
    first = _start(tmp_path, config)
    first.finish("paused")
    second = _start(tmp_path, config, resumed_from={"epoch": 2, "iteration": 20})
    third = _start(tmp_path, config)  # the second never finished: killed
    runs = mf.read_manifest(tmp_path)["runs"]
    assert [r["run"] for r in runs] == [1, 2, 3]
    assert [r["status"] for r in runs] == ["paused", "killed", "running"]
    assert runs[1]["resumed_from"] == {"epoch": 2, "iteration": 20}
    assert runs[1]["ended"] is None
    assert (second.index, third.index) == (1, 2)
    assert third.warnings == []  # same software, same data: nothing to warn about


def test_different_torch_version_on_resume_warns_and_is_recorded(tmp_path):
    config = make_config("exp", 0)
    _start(tmp_path, config).finish("interrupted")
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["runs"][0]["software"]["torch"] = "1.0.0"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.warns(mf.ReproducibilityWarning, match=r"torch version: 1\.0\.0 -> "):
        record = _start(tmp_path, config)
    assert any("torch version: 1.0.0 -> " + torch.__version__ in w for w in record.warnings)
    run = mf.read_manifest(tmp_path)["runs"][-1]
    assert run["warnings"] == record.warnings
    assert f"torch version: 1.0.0 -> {torch.__version__}" in run["changes_since_previous_run"]


def test_changed_dataset_file_changes_the_hash_and_warns_on_resume(tmp_path, monkeypatch):
    data_root = tmp_path / "datasets"
    data_root.mkdir()
    archive = data_root / "omniglot.tar.bz2"
    archive.write_bytes(b"original archive bytes")
    monkeypatch.setenv("DATASET_DIR", str(data_root))
    config = make_config("exp", 0, dataset_path="omniglot_dataset")
    before = mf.dataset_info(config)
    assert before.archive == str(archive)
    assert before.archive_sha256 == mf.dataset_info(config).archive_sha256  # stable
    exp = tmp_path / "exp"
    _start(exp, config, dataset=before).finish("paused")
    archive.write_bytes(b"original archive bytez")
    after = mf.dataset_info(config)
    assert after.archive_sha256 != before.archive_sha256
    with pytest.warns(mf.ReproducibilityWarning, match="dataset archive sha256"):
        record = _start(exp, config, dataset=after)
    assert any("dataset archive sha256" in w for w in record.warnings)


def test_dataset_info_from_task_samplers(tmp_path):
    archive = tmp_path / "data.tar.bz2"
    archive.write_bytes(b"abc")
    tasks = SimpleNamespace(
        source=SimpleNamespace(folder=tmp_path / "data", archive=archive), split_hash="f" * 64
    )
    info = mf.dataset_info(make_config("exp", 0), tasks)
    # sha256(b"abc"), the standard test vector.
    assert info.archive_sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert info.split_hash == "f" * 64 and info.note == ""


def test_config_hash_is_stable_and_key_order_irrelevant(tmp_path):
    config = make_config("exp", 0)
    data = to_dict(config)
    shuffled = dict(reversed(list(data.items())))
    path = tmp_path / "c.json"
    path.write_text(json.dumps(shuffled, indent=4))
    assert config_hash(load_config(path)) == config_hash(config)
    assert config_hash(from_dict(data)) == config_hash(config)
    changed = from_dict(data | {"cnn_num_filters": 63})
    assert config_hash(changed) != config_hash(config)


def test_git_info_outside_a_checkout_and_dirty_tracking(tmp_path):
    outside = mf.git_info(tmp_path)
    assert outside["commit"] is None and "not a git checkout" in outside["error"]
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "one")
    clean = mf.git_info(repo)
    assert clean["commit"] == _git(repo, "rev-parse", "HEAD").strip()
    assert clean["dirty"] is False and clean["diff_sha256"] is None
    (repo / "a.py").write_text("x = 2\n")
    edited = mf.git_info(repo)
    assert edited["dirty"] is True and edited["diff_sha256"]
    (repo / "a.py").write_text("x = 3\n")
    assert mf.git_info(repo)["diff_sha256"] != edited["diff_sha256"]
    (repo / "a.py").write_text("x = 1\n")
    (repo / "new.py").write_text("y = 1\n")
    untracked = mf.git_info(repo)
    assert untracked["dirty"] is True and untracked["untracked_files"] == ["new.py"]


def test_corrupt_manifest_is_kept_aside(tmp_path):
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.warns(mf.ReproducibilityWarning, match="previous manifest unreadable"):
        record = _start(tmp_path, make_config("exp", 0))
    kept = list(tmp_path.glob("manifest.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == "{broken"
    assert record.entry["run"] == 1 and "unreadable" in record.entry["notes"][0]


def test_manifest_with_a_run_that_is_not_an_object_is_corrupt(shown, capsys):
    # A hand-edited run entry used to crash start_run (so training) and show with
    # AttributeError; it is a corrupt manifest like any other.
    root, configs, folder = shown
    (folder / "manifest.json").write_text('{"format": 1, "runs": [5]}')
    assert _show("omni_s0", root, configs) == 0
    assert 'every entry of "runs" must be an object' in capsys.readouterr().out
    with pytest.warns(mf.ReproducibilityWarning, match="previous manifest unreadable"):
        record = _start(folder, make_config("omni_s0", 0))
    assert record.entry["run"] == 1
    assert len(list(folder.glob("manifest.json.corrupt-*"))) == 1


def test_recorded_run_marks_a_crash_as_failed(tmp_path):
    config = make_config("exp", 0)
    with pytest.raises(RuntimeError), mf.recorded_run(tmp_path, config, devices=["cpu"]):
        raise RuntimeError("boom")
    run = mf.read_manifest(tmp_path)["runs"][-1]
    assert run["status"] == "failed" and run["message"] == "RuntimeError: boom"
    with mf.recorded_run(tmp_path, config, devices=["cpu"]) as record:
        record.finish("done")
    assert mf.read_manifest(tmp_path)["runs"][-1]["status"] == "done"


@pytest.fixture
def shown(tmp_path):
    root, configs = tmp_path / "experiments", tmp_path / "experiment_config"
    config = make_config("omni_s0", 0)
    folder = write_experiment(root, config, status="paused", curves=[(0.5, 0.4)], generated=configs)
    _start(folder, config).finish("paused", "paused after 1 epoch")
    return root, configs, folder


def _show(name, root, configs):
    return main(["show", name, "--experiments-root", str(root), "--configs", str(configs)])


def test_show_prints_manifest_and_no_differences(shown, capsys):
    root, configs, _ = shown
    assert _show("omni_s0", root, configs) == 0
    out = capsys.readouterr().out
    assert "run 1: paused" in out
    assert f"torch {torch.__version__}" in out
    assert "config hash:" in out and "seeds:       train 0, val 0, test 0" in out
    assert "config: no differences" in out


def test_show_reveals_a_hand_edited_config(shown, capsys):
    root, configs, folder = shown
    edited = from_dict(to_dict(load_config(folder / "config.json")) | {"cnn_num_filters": 32})
    save_config(edited, folder / "config.json")
    assert _show("omni_s0", root, configs) == 0
    out = capsys.readouterr().out
    assert '-  "cnn_num_filters": 64,' in out
    assert '+  "cnn_num_filters": 32,' in out
    assert "no differences" not in out
    assert "was changed after run 1 started" in out


def test_show_unknown_experiment_is_a_user_error(shown, capsys):
    root, configs, _ = shown
    assert _show("nope", root, configs) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err


def test_show_with_a_config_snapshot_that_is_not_utf8(shown, capsys):
    # Used to escape as UnicodeDecodeError (a traceback) from the config diff.
    root, configs, folder = shown
    (folder / "config.json").write_bytes(b"\xff\xfe garbage")
    assert _show("omni_s0", root, configs) == 0
    assert "config.json: cannot read" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("git", ["abc"], "'git' must be dict, got list"),
        ("devices", "cpu", "'devices' must be list, got str"),
        ("devices", ["cpu"], "every 'devices' entry must be dict"),
        ("seeds", 3, "'seeds' must be dict, got int"),
        ("run", "one", "'run' must be int, got str"),
        ("command", {"argv": "train"}, "command 'argv' must be a list, got str"),
    ],
)
def test_a_manifest_field_of_the_wrong_type_is_a_corrupt_manifest(
    shown, capsys, field, value, words
):
    """Issue 29: such a manifest crashed `show` with a traceback; it is read (and
    refused) in one place, so show says what is wrong and a resume keeps it aside."""
    root, configs, folder = shown
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["runs"][0][field] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert _show("omni_s0", root, configs) == 0
    captured = capsys.readouterr()
    assert f"manifest: {folder / 'manifest.json'}: run #1: {words}" in captured.out
    assert "Traceback" not in captured.err
    with pytest.warns(mf.ReproducibilityWarning, match="previous manifest unreadable"):
        record = _start(folder, make_config("omni_s0", 0))
    assert record.entry["run"] == 1


def test_show_lists_what_a_resume_changed_and_what_force_let_through(shown, capsys):
    root, configs, folder = shown
    record = _start(folder, make_config("omni_s0", 0))
    record.finish("paused", "")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["runs"][-1]["execution_changes"] = ["world_size: 1 -> 2"]
    manifest["runs"][-1]["forced_differences"] = ["meta_learning_rate: 0.001 -> 0.002"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert _show("omni_s0", root, configs) == 0
    out = capsys.readouterr().out
    assert "resumed on:  world_size: 1 -> 2 (execution" in out
    assert "--force:     meta_learning_rate: 0.001 -> 0.002" in out
