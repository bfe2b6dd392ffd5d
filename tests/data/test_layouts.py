"""Every data set layout reaches the same cache and the same task sampler (issue 17).

Each test generates its data set small (random images, a few classes), loads it, checks
the pixels against what it wrote, reloads it from the cache without reading the data
again, and samples the same tasks from both loads.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import (
    PICKLE_NAMES,
    class_arrays,
    csv_layout,
    mini_imagenet_pickles,
    pack,
    random_jpeg_tree,
)
from metasuite.config import ExperimentConfig, replace
from metasuite.data.folders import load_dataset, load_splits
from metasuite.data.images import convert_pixels, decode_image
from metasuite.data.layouts import LAYOUTS, detect_layout
from metasuite.data.tasks import FewShotTasks
from metasuite.errors import DatasetError

SPLIT_CLASSES = {"train": 4, "val": 3, "test": 3}


def _config(dataset: str, size: int, channels: int, **changes) -> ExperimentConfig:
    base = dict(
        dataset_name=dataset,
        dataset_path=dataset,
        experiment_name="layouts",
        image_height=size,
        image_width=size,
        image_channels=channels,
        num_classes_per_set=3,
        num_samples_per_class=2,
        num_target_samples=2,
        num_dataprovider_workers=0,
        train_val_test_split=[0.6, 0.2, 0.2],
        num_stages=2,
    )
    return replace(ExperimentConfig(), source="test_layouts", **(base | changes))


def _no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any decoding or array/pickle reading fail: the cache must be enough."""

    def refuse(*args, **kwargs):
        raise AssertionError("data read again although the cache matches")

    for module in ("metasuite.data.csv_split", "metasuite.data.folders"):
        monkeypatch.setattr(f"{module}.decode_images", refuse)
    monkeypatch.setattr("metasuite.data.arrays._open_array", refuse)
    monkeypatch.setattr("metasuite.data.pickles.safe_load", refuse)


def _same_tasks(a: FewShotTasks, b: FewShotTasks) -> None:
    for split in ("train", "val", "test"):
        x, y = a.sampler(split).batch(range(3)), b.sampler(split).batch(range(3))
        assert torch.equal(x.support_x, y.support_x) and torch.equal(x.query_x, y.query_x)
        assert torch.equal(x.support_y, y.support_y)
    first, other = a.train.batch([0]), a.train.batch([1])
    assert not torch.equal(first.support_x, other.support_x)  # tasks do differ


def _cache_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("*.cache.pt"))


# ------------------------------------------------------------------ CSV split layout
def test_csv_layout_is_pre_split_by_its_files_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = csv_layout(tmp_path / "mini_csv", SPLIT_CLASSES)
    assert count == 10 * 6
    # sets_are_pre_split false and folder indexes that fit no CSV: both ignored here.
    config = _config("mini_csv", 16, 3, indexes_of_folders_indicating_class=[-5, -4])
    tasks = FewShotTasks.from_config(config, tmp_path, quiet=True)
    assert tasks.class_counts == SPLIT_CLASSES
    for split in ("train", "val", "test"):
        data = tasks.sampler(split).data
        assert all(n.startswith(f"{split}/n") for n in data.class_names)
        assert data.images.shape == (6 * SPLIT_CLASSES[split], 3, 16, 16)
        label = data.class_names[1].split("/")[1]
        rows = [r.split(",") for r in (tmp_path / "mini_csv" / f"{split}.csv").read_text().split()]
        files = sorted(f for f, lab in rows[1:] if lab == label)
        expected = decode_image(str(tmp_path / "mini_csv" / "images" / files[0]), 16, 16, 3)
        assert torch.equal(data.images[6], torch.from_numpy(expected))
    assert len(_cache_files(tmp_path)) == 1
    _no_reading(monkeypatch)
    _same_tasks(tasks, FewShotTasks.from_config(config, tmp_path, quiet=True))


def test_csv_row_naming_a_missing_image_is_one_line_naming_the_row(tmp_path: Path) -> None:
    csv_layout(tmp_path / "mini_csv", SPLIT_CLASSES, per_class=2)
    val = tmp_path / "mini_csv" / "val.csv"
    val.write_text(val.read_text() + "ghost.jpg,n2000000\n")
    with pytest.raises(DatasetError, match=r"val\.csv:8: image .*ghost\.jpg not found"):
        load_splits(_config("mini_csv", 16, 3), tmp_path, quiet=True)
    val.write_text("filename,label\njust-one-column\n")
    with pytest.raises(DatasetError, match=r"val\.csv:2: expected a 'filename,label' row"):
        load_splits(_config("mini_csv", 16, 3), tmp_path, quiet=True)
    val.write_text("filename,label\n../../etc/passwd,x\n")
    with pytest.raises(DatasetError, match=r"val\.csv:2: file name .* must lie inside"):
        load_splits(_config("mini_csv", 16, 3), tmp_path, quiet=True)


# ------------------------------------------------------------------ class arrays
def test_class_arrays_are_split_by_ratio_like_omniglot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = class_arrays(tmp_path / "quickdraw", 15)
    config = _config("quickdraw", 28, 1, sets_are_pre_split=True)  # ignored for arrays
    tasks = FewShotTasks.from_config(config, tmp_path, quiet=True)
    # The reference arithmetic: shuffle the sorted classes with RandomState(val_seed).
    order = np.arange(15, dtype=np.int32)
    np.random.RandomState(seed=0).shuffle(order)
    names = sorted(arrays)
    for split, ids in (("train", order[:9]), ("val", order[9:12]), ("test", order[12:])):
        data = tasks.sampler(split).data
        assert data.class_names == tuple(names[i] for i in sorted(ids))
        stacked = np.concatenate([arrays[n] for n in data.class_names])[:, None]
        assert torch.equal(data.images, torch.from_numpy(stacked))  # exact bytes, no resize
    assert not tasks.train.rotate  # not Omniglot
    _no_reading(monkeypatch)
    _same_tasks(tasks, FewShotTasks.from_config(config, tmp_path, quiet=True))


def test_max_images_per_class_caps_each_class_and_keys_the_cache(tmp_path: Path) -> None:
    arrays = class_arrays(tmp_path / "quickdraw", 6, per_class=9, flat=False)
    full = load_dataset(_config("quickdraw", 28, 1), tmp_path / "quickdraw", quiet=True)
    capped = load_dataset(
        _config("quickdraw", 28, 1, max_images_per_class=4), tmp_path / "quickdraw", quiet=True
    )
    assert (full.class_offsets[1:] - full.class_offsets[:-1]).tolist() == [
        len(arrays[n]) for n in sorted(arrays)
    ]
    assert (capped.class_offsets[1:] - capped.class_offsets[:-1]).tolist() == [4] * 6
    first = sorted(arrays)[0]
    assert torch.equal(capped.images[:4, 0], torch.from_numpy(arrays[first][:4]))
    assert capped.cache != full.cache and len(_cache_files(tmp_path)) == 2


def test_class_arrays_are_resized_and_coloured_like_image_files(tmp_path: Path) -> None:
    arrays = class_arrays(tmp_path / "quickdraw", 6, npz_every=0)
    data = load_dataset(_config("quickdraw", 16, 3), tmp_path / "quickdraw", quiet=True)
    first = arrays[sorted(arrays)[0]]
    assert data.images.shape[1:] == (3, 16, 16)
    assert torch.equal(
        data.images[: len(first)], torch.from_numpy(convert_pixels(first, 16, 16, 3))
    )
    # The same filter as an image file of the same pixels: pillow LANCZOS.
    from PIL import Image

    Image.fromarray(first[0]).save(tmp_path / "one.png")
    assert torch.equal(
        data.images[0], torch.from_numpy(decode_image(str(tmp_path / "one.png"), 16, 16, 3))
    )


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 700), np.uint8), r"\[n, 700\], which is not \[n, H\*W\] of square"),
        (np.zeros((4, 28, 28), np.float32), r"images are float32; expected uint8"),
        (np.zeros((4, 2, 28, 28), np.uint8), r"shape \[4, 2, 28, 28\]; expected \[n, H, W\]"),
        # Another image size than the other classes': refused, not silently rescaled.
        (np.zeros((4, 32, 32), np.uint8), r"images of 32x32, but \S+ holds 28x28; every class"),
        (np.zeros((4, 1024), np.uint8), r"images of 32x32, but \S+ holds 28x28; every class"),
    ],
)
def test_malformed_class_array_names_the_file(tmp_path: Path, array, message) -> None:
    class_arrays(tmp_path / "quickdraw", 5)
    np.save(tmp_path / "quickdraw" / "zz_bad.npy", array)
    with pytest.raises(DatasetError, match=rf"zz_bad\.npy: .*{message}"):
        load_splits(_config("quickdraw", 28, 1), tmp_path, quiet=True)


def test_class_array_holding_objects_is_refused_not_unpickled(tmp_path: Path) -> None:
    class_arrays(tmp_path / "quickdraw", 5)
    np.save(tmp_path / "quickdraw" / "zz_obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetError, match=r"zz_obj\.npy: cannot read the class array"):
        load_splits(_config("quickdraw", 28, 1), tmp_path, quiet=True)


# ------------------------------------------------------------------ mini-ImageNet pickles
def test_mini_imagenet_pickles_load_through_the_same_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = mini_imagenet_pickles(tmp_path / "mini_pkl", SPLIT_CLASSES)
    config = _config("mini_pkl", 20, 3)
    tasks = FewShotTasks.from_config(config, tmp_path, quiet=True)
    assert tasks.class_counts == SPLIT_CLASSES
    for split, blob in blobs.items():
        data = tasks.sampler(split).data
        names = sorted(blob["class_dict"])
        assert data.class_names == tuple(f"{split}/{n}" for n in names)
        rows = blob["class_dict"][names[-1]]
        expected = blob["image_data"][rows].transpose(0, 3, 1, 2)
        assert torch.equal(data.images[-len(rows) :], torch.from_numpy(expected))
    _no_reading(monkeypatch)
    again = FewShotTasks.from_config(config, tmp_path, quiet=True)
    assert again.split_hash == tasks.split_hash
    _same_tasks(tasks, again)


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_hostile_pickle_is_refused_before_it_runs(tmp_path: Path) -> None:
    mini_imagenet_pickles(tmp_path / "mini_pkl", SPLIT_CLASSES, per_class=2)
    proof = tmp_path / "pwned"
    with open(tmp_path / "mini_pkl" / PICKLE_NAMES["val"], "wb") as handle:
        pickle.dump({"image_data": _Payload(str(proof)), "class_dict": {}}, handle)
    with pytest.raises(
        DatasetError, match=r"validation\.pkl: refused to unpickle: it calls .*system"
    ):
        load_splits(_config("mini_pkl", 20, 3), tmp_path, quiet=True)
    assert not proof.exists()


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        ([1, 2, 3], r"holds list; expected"),
        ({"image_data": np.zeros((2, 4, 4, 3), np.float64), "class_dict": {"a": [0]}},
         r"image_data is float64 \[2, 4, 4, 3\]"),
        ({"image_data": np.zeros((2, 4, 4, 3), np.uint8), "class_dict": {"a": [0, 5]}},
         r"class_dict\['a'\] has indexes outside image_data's 2 images"),
    ],
)  # fmt: skip
def test_pickle_of_another_shape_names_the_file(tmp_path: Path, blob, message) -> None:
    mini_imagenet_pickles(tmp_path / "mini_pkl", SPLIT_CLASSES, per_class=2)
    with open(tmp_path / "mini_pkl" / PICKLE_NAMES["test"], "wb") as handle:
        pickle.dump(blob, handle)
    with pytest.raises(DatasetError, match=rf"test\.pkl: {message}"):
        load_splits(_config("mini_pkl", 20, 3), tmp_path, quiet=True)


def test_truncated_pickle_is_a_dataset_error(tmp_path: Path) -> None:
    mini_imagenet_pickles(tmp_path / "mini_pkl", SPLIT_CLASSES, per_class=2)
    path = tmp_path / "mini_pkl" / PICKLE_NAMES["train"]
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match=r"train\.pkl: cannot unpickle .*corrupt or truncated"):
        load_splits(_config("mini_pkl", 20, 3), tmp_path, quiet=True)


def test_pickles_need_all_three_splits(tmp_path: Path) -> None:
    mini_imagenet_pickles(tmp_path / "mini_pkl", {"train": 3, "test": 3}, per_class=2)
    with pytest.raises(DatasetError, match=r"none for the val split"):
        load_splits(_config("mini_pkl", 20, 3), tmp_path, quiet=True)


# ------------------------------------------------------------------ detection, archives
def test_no_known_layout_names_every_layout(tmp_path: Path) -> None:
    (tmp_path / "stuff" / "a").mkdir(parents=True)
    (tmp_path / "stuff" / "a" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError) as caught:
        load_splits(_config("stuff", 20, 3), tmp_path, quiet=True)
    message = str(caught.value)
    assert "\n" not in message and "no images found" in message
    assert all(f"{name} (" in message for name in LAYOUTS)


def test_layout_files_inside_a_wrapper_folder_are_found(tmp_path: Path) -> None:
    csv_layout(tmp_path / "mini" / "miniImagenet", SPLIT_CLASSES, per_class=4)
    assert detect_layout(tmp_path / "mini") == ("csv", tmp_path / "mini" / "miniImagenet")
    random_jpeg_tree(tmp_path / "tree" / "only", {"train": 2}, per_class=2)
    assert detect_layout(tmp_path / "tree") == ("folders", tmp_path / "tree")


@pytest.mark.parametrize(
    ("layout", "suffix"),
    [("csv", ".zip"), ("csv", ".tar.gz.zip"), ("arrays", ".tgz"), ("pickles", ".tar"),
     ("pickles", ".tar.gz"), ("arrays", ".tar.bz2.zip")],
)  # fmt: skip
def test_every_layout_trains_from_any_archive(tmp_path: Path, layout: str, suffix: str) -> None:
    source = tmp_path / "src" / "packed_by_someone"  # the top folder's name is not ours
    if layout == "csv":
        csv_layout(source, SPLIT_CLASSES, per_class=4)
        config = _config("mine", 16, 3)
    elif layout == "arrays":
        class_arrays(source, 15)
        config = _config("mine", 28, 1)
    else:
        mini_imagenet_pickles(source, SPLIT_CLASSES, per_class=4)
        config = _config("mine", 20, 3)
    root = tmp_path / "root"
    root.mkdir()
    pack(source, root / f"mine{suffix}")
    tasks = FewShotTasks.from_config(config, root, quiet=True)
    assert tasks.source.folder == root / "mine"
    assert tasks.source.archive == root / f"mine{suffix}"
    assert sum(tasks.class_counts.values()) == (15 if layout == "arrays" else 10)
    fresh = FewShotTasks.from_config(config, root, quiet=True)  # from the cache now
    _same_tasks(tasks, fresh)
    visible = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert visible == sorted([f"mine{suffix}", "mine", *_cache_files(root)])
    assert len(_cache_files(root)) == 1


@pytest.mark.slow  # a whole (tiny) experiment in a subprocess: ~20 s on 2 busy cores
def test_a_class_array_experiment_trains_and_tests(tmp_path: Path) -> None:
    """The issue's "Done when": point dataset_path at the data and train."""
    data_root = tmp_path / "data"
    class_arrays(data_root / "quickdraw", 12, per_class=6)
    config = {
        "experiment_name": "qd_tiny",
        "dataset_name": "quickdraw",
        "dataset_path": "quickdraw",
        "image_height": 28,
        "image_width": 28,
        "image_channels": 1,
        "train_val_test_split": [0.5, 0.25, 0.25],
        "max_images_per_class": 5,
        "num_classes_per_set": 3,
        "num_samples_per_class": 1,
        "num_target_samples": 1,
        "cnn_num_filters": 4,
        "number_of_training_steps_per_iter": 1,
        "number_of_evaluation_steps_per_iter": 1,
        "total_epochs": 1,
        "total_iter_per_epoch": 2,
        "num_evaluation_tasks": 2,
        "batch_size": 2,
        "backend": "loop",
        "num_dataprovider_workers": 0,
    }
    path = tmp_path / "qd.json"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "metasuite", "train", "--config", str(path), "--gpus", "cpu",
         "--experiments-root", str(tmp_path / "exp"), "--quiet"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, DATASET_DIR=str(data_root), METASUITE_NUM_THREADS="1"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "exp" / "qd_tiny" / "test_summary.json").read_text())
    assert summary  # the test tasks ran on the class arrays' test split
    assert list(data_root.glob("quickdraw.28x28x1.*.cache.pt"))
