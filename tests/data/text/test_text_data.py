"""Text layouts, the token-id cache and the task units (data the tests write)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metasuite.config import from_dict
from metasuite.data.check import describe_dataset
from metasuite.data.tasks import FewShotTasks
from metasuite.data.text.sampler import FewShotTextTasks
from metasuite.errors import DatasetError
from text_helpers import TEXT_TINY, write_rows

pytest.importorskip("tokenizers")


def config(**changes):
    return from_dict(TEXT_TINY | changes)


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATASET_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv"])
def test_every_row_format_gives_the_same_tasks(data_root: Path, fmt: str) -> None:
    write_rows(data_root / "tinytext", fmt=fmt)
    tasks = FewShotTasks.from_config(config(), quiet=True)
    assert isinstance(tasks, FewShotTextTasks)
    assert tasks.data.listing.layout == fmt
    assert tasks.class_counts == {"train": 6, "val": 3, "test": 3}
    write_rows(data_root / "reference", fmt="jsonl")
    reference = FewShotTasks.from_config(
        config(dataset_name="reference", dataset_path="reference"), quiet=True
    )
    for split in ("train", "val", "test"):
        a, b = tasks.sampler(split).batch([0, 7]), reference.sampler(split).batch([0, 7])
        assert a.support_x.dtype == torch.int64 and a.query_x.dtype == torch.int64
        assert a.support_x.equal(b.support_x) and a.query_x.equal(b.query_x)


def test_txt_folders_and_pre_split_files(data_root: Path) -> None:
    folder = data_root / "folders"
    for c in range(6):
        for i in range(4):
            path = folder / f"class{c}" / f"{i}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"w{c} word{i} the text", encoding="utf-8")
    tasks = FewShotTasks.from_config(
        config(
            dataset_name="folders",
            dataset_path="folders",
            train_val_test_split=[0.34, 0.33, 0.33],
            num_classes_per_set=2,
            num_samples_per_class=1,
            num_target_samples=1,
        ),
        quiet=True,
    )
    assert tasks.data.listing.layout == "txt" and tasks.class_counts["train"] == 2
    pre = data_root / "presplit"
    pre.mkdir()
    for split, classes in (("train", range(0, 4)), ("val", range(4, 6)), ("test", range(6, 8))):
        rows = [{"text": f"w{c} x{i}", "label": f"c{c}"} for c in classes for i in range(4)]
        (pre / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = FewShotTasks.from_config(
        config(
            dataset_name="presplit",
            dataset_path="presplit",
            num_classes_per_set=2,
            num_samples_per_class=1,
            num_target_samples=1,
        ),
        quiet=True,
    )
    assert tasks.data.listing.pre_split
    assert tasks.units == {
        "train": [f"train/c{c}" for c in range(4)],
        "val": ["val/c4", "val/c5"],
        "test": ["test/c6", "test/c7"],
    }


def test_a_task_is_a_pure_function_of_seed_split_and_index(data_root: Path) -> None:
    write_rows(data_root / "tinytext")
    first = FewShotTasks.from_config(config(), quiet=True)
    again = FewShotTasks.from_config(config(), quiet=True)  # from the cache this time
    assert again.data.cache_state == "loaded" and first.data.cache_state == "written"
    a = first.train.batch([3, 4])
    b = again.train.batch([4])
    assert a.select([1]).support_x[..., : b.support_x.shape[-1]].equal(b.support_x[..., :])
    plans = [tuple(first.train.plan(i)[:, 0]) for i in range(40)]
    assert len(set(plans)) > 30  # tasks differ, and labels are shuffled per task:
    first_rows = {first.train.plan(i)[0, 0] for i in range(40)}
    assert len({first.data.labels[r] for r in first_rows}) > 3
    other_seed = FewShotTasks.from_config(config(train_seed=1), quiet=True)
    assert not np.array_equal(other_seed.train.plan(0), first.train.plan(0))
    # Dynamic padding: a batch is as long as its longest example, padded with pad id.
    batch = first.train.batch([0])
    pad = first.data.tokenizer.pad_id
    assert (batch.support_x[..., -1] != pad).any() or (batch.query_x[..., -1] != pad).any()
    assert batch.support_y.tolist() == [[0, 0, 1, 1, 2, 2]]


def test_the_tokenizer_learns_the_training_split_only(data_root: Path) -> None:
    write_rows(data_root / "tinytext")
    tasks = FewShotTasks.from_config(config(vocab_size=400), quiet=True)
    vocab = tasks.data.tokenizer.backend.get_vocab()
    train = {int(u[5:]) for u in tasks.units["train"]}
    test = {int(u[5:]) for u in tasks.units["test"]}
    assert all(f"w{c}x0" in vocab for c in train)
    assert not any(f"w{c}x0" in vocab for c in test)


def test_domain_unit_tasks_stay_inside_one_domain(data_root: Path) -> None:
    write_rows(data_root / "reviews", domains=6, fmt="json")
    cfg = config(
        dataset_name="reviews",
        dataset_path="reviews",
        task_unit="domain",
        num_classes_per_set=2,
        test_domains=["d0", "d1"],
        val_domains=["d2"],
    )
    tasks = FewShotTasks.from_config(cfg, quiet=True)
    assert tasks.units["test"] == ["d0", "d1"] and tasks.units["train"] == ["d3", "d4", "d5"]
    for i in range(20):
        rows = tasks.train.plan(i)
        assert len({tasks.data.domains[r] for r in rows.reshape(-1)}) == 1
        assert len({tasks.data.labels[r] for r in rows[:, 0]}) == 2
    text = describe_dataset(cfg)
    assert "layout:     json" in text and "task unit:  domain" in text


def test_data_check_detects_a_text_folder_without_a_config(data_root: Path) -> None:
    write_rows(data_root / "tinytext")
    from metasuite.config import ExperimentConfig, replace

    plain = replace(
        ExperimentConfig(),
        dataset_name="tinytext",
        dataset_path="tinytext",
        train_val_test_split=(0.5, 0.25, 0.25),
    )
    text = describe_dataset(plain)
    assert "layout:     jsonl" in text and "tokenizer:" in text
    assert "train         6       6        48" in text


@pytest.mark.parametrize(
    ("write", "changes", "message"),
    [
        (lambda f: (f / "d.jsonl").write_text('{"label": "a"}\n'), {}, "line 1: no 'text' column"),
        (
            lambda f: (f / "d.jsonl").write_text('{"text": " ", "label": "a"}\n'),
            {},
            "line 1: the 'text' column is empty",
        ),
        (
            lambda f: (f / "d.csv").write_bytes(b"text,label\nok,a\n\xff\xfe,b\n"),
            {},
            "line 3 is not UTF-8",
        ),
        (lambda f: write_rows(f, per_class=3), {}, "fewer than num_samples_per_class"),
        (
            lambda f: (f / "d.json").write_text(
                json.dumps(
                    [{"text": f"t {i}", "label": "pos", "domain": f"d{i % 3}"} for i in range(30)]
                )
            ),
            {"task_unit": "domain", "num_classes_per_set": 2},
            "has a single label ('pos')",
        ),
        (lambda f: write_rows(f), {"text_column": "sentence"}, "no 'sentence' column"),
        # strict JSON, as for every JSON file metasuite reads (issue 29)
        (
            lambda f: (f / "d.jsonl").write_text('{"text": "x", "label": "a", "label": "b"}\n'),
            {},
            "line 1: key 'label' appears twice",
        ),
        (
            lambda f: (f / "d.json").write_text("[" * 50_000 + "]" * 50_000),
            {},
            "nested 50,000 levels deep",
        ),
    ],
)
def test_bad_text_data_is_one_line(data_root: Path, write, changes, message) -> None:
    folder = data_root / "tinytext"
    folder.mkdir()
    write(folder)
    with pytest.raises(DatasetError) as caught:
        FewShotTasks.from_config(config(**changes), quiet=True)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    # A bad row stops the read before any cache; a too-small class or domain is found in
    # the rows already cached (as for images: the cache is the data, not the experiment).
    if "column" in message or "UTF-8" in message:
        assert not list(data_root.glob("*.cache.pt"))


def test_the_review_domain_example_config_is_valid() -> None:
    from metasuite.config import REPO_ROOT, load_config

    cfg = load_config(REPO_ROOT / "docs" / "examples" / "review_domains.json")
    assert cfg.task_unit == "domain" and cfg.meta_learner == "reptile"
    assert cfg.test_domains == ("books", "dvd", "electronics")


def test_a_missing_wordnet_corpus_says_how_to_get_it(data_root: Path) -> None:
    cfg = config(dataset_name="wordnet_glosses", dataset_path="wordnet_glosses")
    with pytest.raises(DatasetError) as caught:
        FewShotTasks.from_config(cfg, quiet=True)
    message = str(caught.value)
    assert "utils/build_wordnet_glosses.py" in message and "\n" not in message
