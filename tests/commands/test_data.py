"""``metasuite data check`` and the shipped example suite for the new layouts (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_helpers import class_arrays, csv_layout, mini_imagenet_pickles, pack
from metasuite.cli import main
from metasuite.config import REPO_ROOT, load_config
from metasuite.data.tasks import FewShotTasks
from metasuite.suite.sweep import expand, load_suite

EXAMPLES = REPO_ROOT / "docs" / "examples" / "suite.toml"


def test_data_check_reports_layout_counts_size_and_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_layout(tmp_path / "mini_csv", {"train": 4, "val": 3, "test": 2}, per_class=5)
    monkeypatch.setenv("DATASET_DIR", str(tmp_path))
    assert main(["data", "check", "mini_csv", "--image-size", "16x16x3"]) == 0
    out = capsys.readouterr().out
    assert "layout:     csv (images/ plus train.csv" in out
    assert "image size: 16x16x3" in out
    assert "splits:     pre-split" in out
    assert "built now (there was none)" in out
    assert [line.split()[:3] for line in out.splitlines()[-4:]] == [
        ["train", "4", "20"],
        ["val", "3", "15"],
        ["test", "2", "10"],
        ["total", "9", "45"],
    ]
    assert main(["data", "check", str(tmp_path / "mini_csv"), "--image-size", "16x16x3"]) == 0
    assert "loaded (up to date)" in capsys.readouterr().out


def test_data_check_takes_an_archive_path_or_a_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mini_imagenet_pickles(tmp_path / "src" / "whatever", {"train": 3, "val": 3, "test": 3})
    archive = pack(tmp_path / "src" / "whatever", tmp_path / "l2l.tar.gz.zip")
    assert main(["data", "check", str(archive), "--image-size", "20x20x3"]) == 0
    out = capsys.readouterr().out
    assert f"archive:    {archive}" in out and "layout:     pickles" in out
    assert f"data set:   {tmp_path / 'l2l'}" in out
    config = tmp_path / "c.json"
    settings = {"image_height": 20, "image_width": 20, "image_channels": 3, "num_stages": 2}
    config.write_text(json.dumps({"dataset_path": str(tmp_path / "l2l"), **settings}))
    assert main(["data", "check", str(config)]) == 0
    assert "loaded (up to date)" in capsys.readouterr().out


def test_data_check_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATASET_DIR", str(tmp_path))
    (tmp_path / "bad.zip").write_bytes(b"not a zip at all" * 100)
    for argv in (["data", "check", "nothing_here"], ["data", "check", str(tmp_path / "bad.zip")],
                 ["data", "check", "x", "--image-size", "84x84"]):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("metasuite data: error: ") and err.count("\n") == 1, err


def test_example_suite_generates_valid_configs(tmp_path: Path, capsys) -> None:
    assert main(["generate", "--suite", str(EXAMPLES), "--root", str(tmp_path)]) == 0
    assert "6 experiments: 12 written" in capsys.readouterr().out
    assert main(["generate", "--suite", str(EXAMPLES), "--root", str(tmp_path), "--check"]) == 0
    names = sorted(p.stem for p in (tmp_path / "experiment_config").iterdir())
    assert names == sorted(e.name for e in expand(load_suite(EXAMPLES, root=tmp_path)))
    quickdraw = load_config(tmp_path / "experiment_config" / "quickdraw_maml++_5way_1shot_s0.json")
    assert quickdraw.max_images_per_class == 1000 and quickdraw.image_channels == 1
    mini = load_config(
        tmp_path / "experiment_config" / "mini_imagenet_csv_maml++_5way_5shot_s0.json"
    )
    assert mini.sets_are_pre_split and (mini.image_height, mini.image_channels) == (84, 3)


def test_example_configs_load_data_of_their_layout(tmp_path: Path, capsys) -> None:
    """Each example config, unchanged, reads a small data set in its layout."""
    main(["generate", "--suite", str(EXAMPLES), "--root", str(tmp_path / "suite")])
    configs = tmp_path / "suite" / "experiment_config"
    data = tmp_path / "datasets"
    # By ratio, with the reference arithmetic: int(0.7 * 60), int((0.7 + 0.1) * 60) = 47.
    class_arrays(data / "quickdraw", 60, per_class=3)
    quickdraw = FewShotTasks.from_config(
        load_config(configs / "quickdraw_maml++_5way_1shot_s0.json"), data, quiet=True
    )
    assert quickdraw.class_counts == {"train": 42, "val": 5, "test": 13}
    assert quickdraw.train.batch(range(8)).support_x.shape == (8, 5, 1, 28, 28)
    csv_layout(data / "src" / "miniImagenet", {"train": 5, "val": 5, "test": 5}, per_class=16,
               size=84)  # fmt: skip
    pack(data / "src" / "miniImagenet", data / "mini_imagenet_csv.zip")
    mini = FewShotTasks.from_config(
        load_config(configs / "mini_imagenet_csv_maml++_5way_1shot_s0.json"), data, quiet=True
    )
    assert mini.class_counts == {"train": 5, "val": 5, "test": 5}
    batch = mini.val.batch([0, 1])
    assert batch.support_x.shape == (2, 5, 3, 84, 84) and batch.query_x.shape == (2, 75, 3, 84, 84)
