"""Folder-structure data sets: real Omniglot classes and split, lookup, cache, pre-split layout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import make_archive, omniglot_subset, random_jpeg_tree
from metasuite.config import REPO_ROOT, ExperimentConfig, dataset_root, replace
from metasuite.data import folders
from metasuite.data.archive import KNOWN_FILE_COUNTS
from metasuite.data.folders import find_archive, load_images, load_splits, locate_dataset
from metasuite.data.images import decode_image, decode_images
from metasuite.data.tasks import FewShotTasks
from metasuite.errors import ConfigError, DatasetError


# ------------------------------------------------------------------ the real Omniglot
def _real_classes(folder: Path, part: str) -> set[str]:
    return {f"{a.name}/{c.name}" for a in (folder / part).iterdir() for c in a.iterdir()}


def test_real_omniglot_has_1623_classes_964_background_659_evaluation(
    omniglot_tasks: FewShotTasks, omniglot_folder: Path
) -> None:
    background = _real_classes(omniglot_folder, "images_background")
    evaluation = _real_classes(omniglot_folder, "images_evaluation")
    assert (len(background), len(evaluation)) == (964, 659)
    assert not background & evaluation  # (alphabet, character) pairs never collide
    names = [
        n for s in ("train", "val", "test") for n in omniglot_tasks.sampler(s).data.class_names
    ]
    assert len(names) == len(set(names)) == 1623
    assert set(names) == background | evaluation
    for split in ("train", "val", "test"):
        data = omniglot_tasks.sampler(split).data
        assert data.images.dtype == torch.uint8
        assert tuple(data.images.shape[1:]) == (1, 28, 28)
        assert data.class_offsets.dtype == torch.int64
        assert bool((data.class_sizes() == 20).all())
        assert data.num_images == 20 * data.num_classes


def test_real_omniglot_split_follows_the_reference_arithmetic(
    omniglot_tasks: FewShotTasks, omniglot_config: ExperimentConfig
) -> None:
    p_train, p_val, _ = omniglot_config.train_val_test_split
    cut_train, cut_val = int(p_train * 1623), int(np.sum([p_train, p_val]) * 1623)
    expected = {"train": cut_train, "val": cut_val - cut_train, "test": 1623 - cut_val}
    assert omniglot_tasks.class_counts == expected
    # int() truncates 1150.99999 (the fractions were written as 1151/1623 etc., which sum
    # to 1.0006): the reference code gets 1,150 / 50 / 423, i.e. the usual 1,200 / 423.
    assert expected == {"train": 1150, "val": 50, "test": 423}


def test_split_depends_on_val_seed_only(omniglot_config: ExperimentConfig) -> None:
    def split_names(config: ExperimentConfig) -> dict[str, tuple[str, ...]]:
        splits, _ = load_splits(config, quiet=True)
        return {name: data.class_names for name, data in splits.items()}

    base = split_names(omniglot_config)
    assert split_names(replace(omniglot_config, train_seed=7, test_seed=9)) == base
    other = split_names(replace(omniglot_config, val_seed=1))
    assert set(other["test"]) != set(base["test"])
    assert {len(v) for v in other.values()} == {len(v) for v in base.values()}


def test_split_images_are_the_decoded_files_of_each_class(
    omniglot_tasks: FewShotTasks, omniglot_folder: Path
) -> None:
    for split in ("train", "val", "test"):
        data = omniglot_tasks.sampler(split).data
        for c in (0, data.num_classes // 2, data.num_classes - 1):
            (class_folder,) = omniglot_folder.glob(f"*/{data.class_names[c]}")
            files = sorted(class_folder.iterdir())
            start, end = int(data.class_offsets[c]), int(data.class_offsets[c + 1])
            assert end - start == len(files)
            for row, path in zip(range(start, end), files[:3], strict=False):
                expected = torch.from_numpy(decode_image(str(path), 28, 28, 1))
                assert torch.equal(data.images[row], expected)


def test_omniglot_images_are_white_background_dark_strokes(omniglot_tasks: FewShotTasks) -> None:
    images = omniglot_tasks.train.data.images[:200].float() / 255
    assert images.mean() > 0.7  # mostly white paper
    assert images.amin(dim=(1, 2, 3)).max() < 0.3  # every character has dark strokes


# ------------------------------------------------------------------ locating the data
@pytest.mark.parametrize("dataset_path", ["omniglot", "omniglot_dataset", "{root}/omniglot"])
def test_reference_dataset_paths_find_the_unpacked_folder(
    omniglot_config: ExperimentConfig, omniglot_folder: Path, dataset_path: str
) -> None:
    dataset_path = dataset_path.format(root=dataset_root().name)  # e.g. datasets/omniglot
    config = replace(omniglot_config, dataset_path=dataset_path, dataset_name="omniglot")
    source = locate_dataset(config)
    assert source.folder == omniglot_folder
    assert source.archive == dataset_root() / "omniglot.tar.bz2"


def test_dataset_dir_environment_variable_is_the_root(
    omniglot_config: ExperimentConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "omniglot_dataset").mkdir()
    monkeypatch.setenv("DATASET_DIR", str(tmp_path))
    assert locate_dataset(omniglot_config).folder == tmp_path / "omniglot_dataset"


def test_missing_data_says_where_it_looked(
    omniglot_config: ExperimentConfig, tmp_path: Path
) -> None:
    config = replace(omniglot_config, dataset_path="nope", dataset_name="nope")
    with pytest.raises(DatasetError) as caught:
        locate_dataset(config, tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "nope") in message
    assert str(tmp_path / "nope.tar.bz2") in message
    assert "DATASET_DIR" in message


def test_archive_is_unpacked_on_first_use_under_an_alias(
    omniglot_config: ExperimentConfig,
    omniglot_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    count = omniglot_subset(omniglot_folder, tmp_path / "src" / "omniglot_dataset")
    root = tmp_path / "root"
    root.mkdir()
    make_archive(root / "omniglot.tar.bz2", tmp_path / "src" / "omniglot_dataset")
    monkeypatch.setitem(KNOWN_FILE_COUNTS, "omniglot.tar.bz2", count)
    config = replace(omniglot_config, dataset_path="omniglot", dataset_name="omniglot")
    source = locate_dataset(config, root, quiet=True)
    assert source.folder == root / "omniglot_dataset"
    assert source.archive == root / "omniglot.tar.bz2"
    assert sum(1 for p in source.folder.rglob("*.png")) == count
    assert locate_dataset(config, root).folder == source.folder  # found, not unpacked again


def test_archive_that_unpacks_to_an_unexpected_folder_is_an_error(
    omniglot_config: ExperimentConfig, tmp_path: Path
) -> None:
    (tmp_path / "src" / "elsewhere" / "a" / "b").mkdir(parents=True)
    (tmp_path / "src" / "elsewhere" / "a" / "b" / "x.png").write_bytes(b"x")
    make_archive(tmp_path / "mydata.tar.bz2", tmp_path / "src" / "elsewhere")
    config = replace(omniglot_config, dataset_path="mydata", dataset_name="mydata")
    with pytest.raises(DatasetError, match=r"mydata\.tar\.bz2: unpacked to .*elsewhere"):
        locate_dataset(config, tmp_path, quiet=True)


@pytest.mark.parametrize("path", ["", ".", "root", "/"])
def test_dataset_path_naming_the_root_itself_is_an_error(
    omniglot_config: ExperimentConfig, tmp_path: Path, path: str
) -> None:
    (tmp_path / "root" / "data" / "a" / "b").mkdir(parents=True)
    (tmp_path / "root" / "data" / "a" / "b" / "x.png").write_bytes(b"x")
    config = replace(omniglot_config, dataset_path=path)
    with pytest.raises(DatasetError, match="holds the data set root"):
        locate_dataset(config, tmp_path / "root")


def test_dataset_path_typo_beside_an_unpacked_archive_names_the_folder(
    omniglot_config: ExperimentConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "src" / "mydata" / "a" / "b").mkdir(parents=True)
    (tmp_path / "src" / "mydata" / "a" / "b" / "x.png").write_bytes(b"x")
    make_archive(tmp_path / "mydata.tar.bz2", tmp_path / "src" / "mydata")
    (tmp_path / "mydata").mkdir()  # unpacked before, under its own name

    def unpack(*args, **kwargs):
        raise AssertionError("a typo must not unpack the archive again")

    monkeypatch.setattr(folders, "unpack", unpack)
    config = replace(omniglot_config, dataset_path="mydta", dataset_name="mydata")
    with pytest.raises(DatasetError, match=r"dataset_path 'mydta'.*set dataset_path to 'mydata'"):
        locate_dataset(config, tmp_path, quiet=True)


# ------------------------------------------------------------------ the image cache
@pytest.fixture
def small_omniglot(omniglot_folder: Path, tmp_path: Path, omniglot_config: ExperimentConfig):
    """(config, root): 12 real characters in <tmp>/omniglot_dataset, decoded in-process."""
    omniglot_subset(omniglot_folder, tmp_path / "omniglot_dataset")
    config = replace(
        omniglot_config, num_dataprovider_workers=0, train_val_test_split=[0.5, 0.25, 0.25]
    )
    return config, tmp_path


def _caches(root: Path) -> list[Path]:
    return sorted(root.glob("omniglot_dataset.*.cache.pt"))


class _DecodeCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        monkeypatch.setattr(folders, "decode_images", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return decode_images(*args, **kwargs)


def test_cache_is_written_beside_the_data_and_reused(small_omniglot, monkeypatch) -> None:
    config, root = small_omniglot
    decode = _DecodeCounter(monkeypatch)
    images, offsets, names = load_images(config, root / "omniglot_dataset", quiet=True)
    assert decode.calls == 1
    (cache,) = _caches(root)
    assert (
        cache.name.startswith("omniglot_dataset.28x28x1.") and len(cache.name.split(".")[2]) == 16
    )
    again = load_images(config, root / "omniglot_dataset", quiet=True)
    assert decode.calls == 1  # loaded, not decoded
    assert torch.equal(again[0], images) and torch.equal(again[1], offsets) and again[2] == names
    load_splits(replace(config, val_seed=3), root, quiet=True)  # the split is not cached
    assert decode.calls == 1


def test_cache_key_follows_size_and_file_list(small_omniglot, monkeypatch) -> None:
    config, root = small_omniglot
    decode = _DecodeCounter(monkeypatch)
    load_images(config, root / "omniglot_dataset", quiet=True)
    small = load_images(
        replace(config, image_height=20, image_width=20), root / "omniglot_dataset", quiet=True
    )
    assert small[0].shape[1:] == (1, 20, 20) and decode.calls == 2
    first = next((root / "omniglot_dataset").rglob("*.png"))
    first.rename(first.with_name("zz_moved.png"))
    load_images(config, root / "omniglot_dataset", quiet=True)
    assert decode.calls == 3
    assert len(_caches(root)) == 3


def test_corrupt_cache_is_rebuilt_with_a_warning(small_omniglot, monkeypatch) -> None:
    config, root = small_omniglot
    images, _, _ = load_images(config, root / "omniglot_dataset", quiet=True)
    (cache,) = _caches(root)
    for damage in (b"not a torch file", cache.read_bytes()[:1000]):
        cache.write_bytes(damage)
        decode = _DecodeCounter(monkeypatch)
        with pytest.warns(UserWarning, match="rebuilding the image cache"):
            rebuilt, _, _ = load_images(config, root / "omniglot_dataset", quiet=True)
        assert decode.calls == 1 and torch.equal(rebuilt, images)
    assert torch.load(cache, weights_only=True)["images"].shape == images.shape


def test_cache_with_wrong_contents_is_rebuilt(small_omniglot, monkeypatch) -> None:
    config, root = small_omniglot
    images, _, _ = load_images(config, root / "omniglot_dataset", quiet=True)
    (cache,) = _caches(root)
    blob = torch.load(cache, weights_only=True)
    blob["images"] = blob["images"][:-1]
    torch.save(blob, cache)
    with pytest.warns(UserWarning, match="offsets do not match"):
        rebuilt, _, _ = load_images(config, root / "omniglot_dataset", quiet=True)
    assert torch.equal(rebuilt, images)


def test_reset_stored_paths_rebuilds_the_cache(small_omniglot, monkeypatch) -> None:
    config, root = small_omniglot
    decode = _DecodeCounter(monkeypatch)
    load_images(config, root / "omniglot_dataset", quiet=True)
    load_images(replace(config, reset_stored_paths=True), root / "omniglot_dataset", quiet=True)
    assert decode.calls == 2


def test_cache_and_unpack_leftovers_are_ignored_by_git() -> None:
    names = [
        "datasets/omniglot_dataset.28x28x1.0123456789abcdef.cache.pt",
        "datasets/.omniglot_dataset.28x28x1.0123456789abcdef.cache.pt.x1y2.tmp",
        "datasets/omniglot_dataset/images_background/a/b/c.png",
        "datasets/.omniglot.tar.bz2.lock",
        "datasets/.omniglot.tar.bz2.unpacking/x.png",
    ]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *names],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert sorted(result.stdout.split()) == sorted(names)


def test_parallel_decoding_gives_the_same_array(omniglot_folder: Path) -> None:
    paths = sorted(str(p) for p in (omniglot_folder / "images_evaluation").rglob("*.png"))[:600]
    serial = decode_images(paths, 28, 28, 1, workers=0, quiet=True)
    parallel = decode_images(paths, 28, 28, 1, workers=2, quiet=True)
    assert serial.shape == (600, 1, 28, 28) and np.array_equal(serial, parallel)


def test_broken_image_is_a_dataset_error_naming_it(small_omniglot) -> None:
    config, root = small_omniglot
    broken = next((root / "omniglot_dataset").rglob("*.png"))
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match=rf"{broken.name}: cannot decode image"):
        load_images(config, root / "omniglot_dataset", quiet=True)


def test_empty_data_folder_is_a_dataset_error(omniglot_config, tmp_path: Path) -> None:
    (tmp_path / "omniglot_dataset" / "images_background").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        load_splits(omniglot_config, tmp_path, quiet=True)


# ------------------------------------------------------------------ pre-split layout
MINI_CLASSES = {"train": 4, "val": 3, "test": 3}


@pytest.fixture
def mini_imagenet_root(tmp_path: Path) -> tuple[Path, int]:
    """<tmp>/root/mini_imagenet_full_size.tar.bz2 holding random JPEGs, reference layout."""
    count = random_jpeg_tree(tmp_path / "src" / "mini_imagenet_full_size", MINI_CLASSES)
    root = tmp_path / "root"
    root.mkdir()
    make_archive(
        root / "mini_imagenet_full_size.tar.bz2", tmp_path / "src" / "mini_imagenet_full_size"
    )
    return root, count


def _mini_config(**changes) -> ExperimentConfig:
    base = dict(
        dataset_name="mini_imagenet_full_size",
        dataset_path="mini_imagenet_full_size",
        experiment_name="mini_layout",
        image_height=32,
        image_width=32,
        image_channels=3,
        sets_are_pre_split=True,
        indexes_of_folders_indicating_class=[-3, -2],
        train_val_test_split=[0.64, 0.16, 0.20],
        num_classes_per_set=3,
        num_samples_per_class=2,
        num_target_samples=3,
        num_dataprovider_workers=2,
    )
    return replace(ExperimentConfig(), **(base | changes))


def test_small_archive_named_like_mini_imagenet_fails_the_count(mini_imagenet_root) -> None:
    root, count = mini_imagenet_root
    with pytest.raises(DatasetError, match=rf"unpacked {count} files but expected 60,000"):
        FewShotTasks.from_config(_mini_config(), root, quiet=True)


@pytest.mark.parametrize("dataset_path", ["mini_imagenet_full_size", "mini_imagenet"])
def test_pre_split_jpeg_archive_loads_through_the_same_code(
    mini_imagenet_root, monkeypatch: pytest.MonkeyPatch, dataset_path: str
) -> None:
    root, count = mini_imagenet_root
    monkeypatch.setitem(KNOWN_FILE_COUNTS, "mini_imagenet_full_size.tar.bz2", count)
    config = _mini_config(dataset_path=dataset_path, dataset_name=dataset_path)
    tasks = FewShotTasks.from_config(config, root, quiet=True)
    assert tasks.source.folder == root / "mini_imagenet_full_size"
    assert tasks.class_counts == MINI_CLASSES
    for split in ("train", "val", "test"):
        data = tasks.sampler(split).data
        assert all(name.startswith(f"{split}/n") for name in data.class_names)
        assert data.images.shape == (6 * MINI_CLASSES[split], 3, 32, 32)
        first = sorted((tasks.source.folder / data.class_names[0]).iterdir())[0]
        assert torch.equal(data.images[0], torch.from_numpy(decode_image(str(first), 32, 32, 3)))
    batch = tasks.train.batch([0, 1])
    assert batch.support_x.shape == (2, 6, 3, 32, 32) and batch.query_x.shape == (2, 9, 3, 32, 32)
    assert not tasks.train.rotate  # only Omniglot is rotated
    plan = tasks.train.plan(1)
    expected = tasks.train.data.images[torch.from_numpy(plan.images[:, :2].reshape(-1))]
    assert torch.equal(batch.support_x[1], expected.float() / 255)


def test_pre_split_needs_split_folders(tmp_path: Path) -> None:
    random_jpeg_tree(tmp_path / "mini_imagenet_full_size", {"train": 3}, per_class=2)
    (tmp_path / "mini_imagenet_full_size" / "train").rename(
        tmp_path / "mini_imagenet_full_size" / "training"
    )
    with pytest.raises(DatasetError, match=r"must be train, val or test.*'training'"):
        load_splits(_mini_config(num_dataprovider_workers=0), tmp_path, quiet=True)


def test_class_folders_deeper_than_the_data_is_an_error(tmp_path: Path) -> None:
    random_jpeg_tree(tmp_path / "mini_imagenet_full_size", {"train": 2}, per_class=2)
    config = _mini_config(indexes_of_folders_indicating_class=[-4, -2])
    with pytest.raises(DatasetError, match=r"only 2 folder.*needs 3"):
        load_splits(config, tmp_path, quiet=True)


def test_find_archive_names_the_archive_without_unpacking(
    omniglot_config: ExperimentConfig, tmp_path: Path
) -> None:
    assert find_archive(omniglot_config, tmp_path) is None
    (tmp_path / "omniglot.tar.bz2").write_bytes(b"not unpacked")
    for path in ("omniglot", "omniglot_dataset"):
        config = replace(omniglot_config, dataset_path=path)
        assert find_archive(config, tmp_path) == tmp_path / "omniglot.tar.bz2"
    assert not (tmp_path / "omniglot_dataset").exists()


@pytest.mark.slow
def test_unpacked_omniglot_missing_a_class_folder_is_refused_naming_it(
    omniglot_config: ExperimentConfig, omniglot_folder: Path, tmp_path: Path
) -> None:
    """Checked on every load, not only at unpack: the real data set (hard-linked) beside
    its real archive, one class folder deleted, is a DatasetError naming that folder,
    not a silently different class split."""
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "omniglot.tar.bz2").symlink_to(REPO_ROOT / "datasets" / "omniglot.tar.bz2")
    copy = root / "omniglot_dataset"
    subprocess.run(["cp", "-al", str(omniglot_folder), str(copy)], check=True)
    for cache in omniglot_folder.parent.glob(f"{omniglot_folder.name}.*.cache.pt"):
        (root / cache.name).hardlink_to(cache)  # the complete copy loads from the cache
    assert len(load_splits(omniglot_config, root)[0]["train"].class_names) == 1150
    gone = next(next((copy / "images_background").iterdir()).iterdir())
    relative = gone.relative_to(copy).as_posix()
    subprocess.run(["rm", "-r", str(gone)], check=True)
    with pytest.raises(DatasetError) as caught:
        load_splits(omniglot_config, root)
    message = str(caught.value)
    assert (
        f"32,440 images but omniglot.tar.bz2 holds {KNOWN_FILE_COUNTS['omniglot.tar.bz2']:,}"
        in (message)
    )
    assert f"missing: {relative}/ (20 files)" in message


def test_colour_omniglot_is_refused_before_decoding(omniglot_config: ExperimentConfig) -> None:
    """image_channels 3 on grayscale Omniglot used to be accepted silently (and write a
    76 MB cache of three equal channels): refused, naming the setting."""
    with pytest.raises(ConfigError, match=r"image_channels is 3 .* grayscale"):
        load_splits(replace(omniglot_config, image_channels=3))


@pytest.mark.parametrize("left", [0, 60_000], ids=["full", "full-mid-write"])
def test_a_cache_that_does_not_fit_on_the_disk_is_a_warning(
    omniglot_folder: Path, omniglot_config: ExperimentConfig, tmp_path: Path, left: int
) -> None:
    """The pixels are decoded already: a full disk costs the cache (a warning saying so),
    not the run. Filling up mid-write, torch.save raises RuntimeError, not OSError (issue
    29: a 50-line traceback): the one classification of write faults still says "no
    space left"."""
    from disk_helpers import fill, small_tmpfs

    with small_tmpfs(tmp_path / "small", "2m") as root:
        count = omniglot_subset(omniglot_folder, root / "omniglot_dataset")
        fill(root, leave_bytes=left)
        config = replace(omniglot_config, num_dataprovider_workers=0)
        with pytest.warns(UserWarning, match="cannot write the image cache .*no space left"):
            images, _, _ = load_images(config, root / "omniglot_dataset", quiet=True)
        assert images.shape[0] == count and not _caches(root)


def test_an_unpacked_known_data_set_is_checked_without_its_archive(
    omniglot_config: ExperimentConfig,
    omniglot_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 29: with the archive gone (moved to save space), a deleted class folder
    trained on fewer classes with exit 0. The unpack leaves the count in the folder."""
    from metasuite.data.archive import UNPACKED_RECORD

    count = omniglot_subset(omniglot_folder, tmp_path / "src" / "omniglot_dataset")
    root = tmp_path / "root"
    root.mkdir()
    make_archive(root / "omniglot.tar.bz2", tmp_path / "src" / "omniglot_dataset")
    monkeypatch.setitem(KNOWN_FILE_COUNTS, "omniglot.tar.bz2", count)
    config = replace(omniglot_config, dataset_path="omniglot", dataset_name="omniglot")
    folder = locate_dataset(config, root, quiet=True).folder
    assert (folder / UNPACKED_RECORD).is_file()
    (root / "omniglot.tar.bz2").unlink()
    assert len(load_images(config, folder, quiet=True)[2]) == 12  # complete: loads
    gone = next(next((folder / "images_background").iterdir()).iterdir())
    subprocess.run(["rm", "-r", str(gone)], check=True)
    with pytest.raises(DatasetError) as caught:
        load_splits(config, root)
    message = str(caught.value)
    assert f"{folder}: {count - 20:,} images but omniglot.tar.bz2 (as unpacked" in message
    assert f"holds {count:,}, so the unpacked data set was changed" in message
