"""Text experiments through ``metasuite train`` (data the tests write, and the real
WordNet archive): every learner killed with SIGKILL and resumed ends bit for bit where
an uninterrupted run ends; the review-domain JSON trains by domain; 2 gloo ranks run;
the manifest records the tokenizer and attention; the tokenizer is kept in the
experiment folder."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from builder_helpers import read_json, summary_rows, train
from text_helpers import REPTILE, TINY_BERT, write_config, write_rows

pytest.importorskip("tokenizers")

LEARNERS: dict[str, dict[str, Any]] = {
    "maml++": {"second_order": True, "use_multi_step_loss_optimization": True},
    "meta_sgd": {"meta_learner": "meta_sgd"},
    "anil": {"meta_learner": "anil"},
    "reptile": REPTILE,
    "reptile_adam": REPTILE | {"inner_optimizer": "adam", "init_inner_loop_learning_rate": 0.01},
}


def killed_and_resumed_equals_uninterrupted(config: Path, tmp_path: Path, **env: str) -> Path:
    reference_root, root = tmp_path / "reference", tmp_path / "killed"
    done = train(config, reference_root, **env)
    assert done.returncode == 0, done.stderr
    killed = train(config, root, METASUITE_FAULT="iteration:5", **env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    final = train(config, root, **env)
    assert final.returncode == 0, final.stderr
    name = json.loads(config.read_text())["experiment_name"]
    folder, reference = root / name, reference_root / name
    assert summary_rows(folder) == summary_rows(reference)
    assert read_json(folder / "test_summary.json") == read_json(reference / "test_summary.json")
    return folder


def test_text_conv_maml_plus_plus_resumes_exactly(tmp_path: Path) -> None:
    write_rows(tmp_path / "data" / "tinytext")
    config = write_config(tmp_path, **LEARNERS["maml++"])
    folder = killed_and_resumed_equals_uninterrupted(
        config, tmp_path, DATASET_DIR=str(tmp_path / "data")
    )
    manifest = read_json(folder / "manifest.json")
    text = manifest["runs"][-1]["dataset"]["text"]
    assert text["layout"] == "jsonl" and text["task_unit"] == "class"
    kept = (folder / "tokenizer" / "sha256.txt").read_text().strip()
    assert kept == text["tokenizer"]["sha256"]
    assert (folder / "tokenizer" / "tokenizer.json").is_file()


REVIEW_DOMAINS: dict[str, Any] = {
    "dataset_name": "reviews",
    "dataset_path": "reviews",
    "task_unit": "domain",
    "num_classes_per_set": 2,
    "test_domains": ["d0", "d1"],
    "val_domains": ["d2"],
}
"""The review-domain format: a JSON list of {text, label, domain}, binary tasks per
domain, three named held-out domains."""


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["class", "domain"])
@pytest.mark.parametrize("learner", ["meta_sgd", "anil", "reptile", "reptile_adam"])
def test_every_learner_resumes_exactly_on_text(tmp_path: Path, learner: str, unit: str) -> None:
    if unit == "class":
        write_rows(tmp_path / "data" / "tinytext")
        config = write_config(tmp_path, **LEARNERS[learner])
    else:
        write_rows(tmp_path / "data" / "reviews", classes=12, domains=6, fmt="json")
        config = write_config(tmp_path, **REVIEW_DOMAINS, **LEARNERS[learner])
    killed_and_resumed_equals_uninterrupted(config, tmp_path, DATASET_DIR=str(tmp_path / "data"))


@pytest.mark.slow
def test_tiny_bert_with_dropout_resumes_exactly_on_review_domains(tmp_path: Path) -> None:
    """The review-domain JSON (a list of {text, label, domain}), binary tasks per domain,
    named test domains; a tiny BERT with dropout, second order."""
    write_rows(tmp_path / "data" / "reviews", classes=12, domains=6, fmt="json")
    config = write_config(tmp_path, **REVIEW_DOMAINS, second_order=True, **TINY_BERT)
    folder = killed_and_resumed_equals_uninterrupted(
        config, tmp_path, DATASET_DIR=str(tmp_path / "data")
    )
    text = read_json(folder / "manifest.json")["runs"][-1]["dataset"]["text"]
    assert text["attention"] == "eager" and text["task_unit"] == "domain"


@pytest.mark.slow
def test_two_gloo_ranks_train_text(tmp_path: Path) -> None:
    write_rows(tmp_path / "data" / "tinytext")
    config = write_config(tmp_path, total_epochs=1)
    env = {"DATASET_DIR": str(tmp_path / "data")}
    one = train(config, tmp_path / "one", **env)
    two = train(config, tmp_path / "two", "--nproc", "2", **env)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    a, b = summary_rows(tmp_path / "one" / "tiny")[0], summary_rows(tmp_path / "two" / "tiny")[0]
    assert float(b["train_loss_mean"]) == pytest.approx(float(a["train_loss_mean"]), rel=1e-3)


@pytest.mark.slow
def test_a_tiny_wordnet_experiment_from_the_shipped_archive(tmp_path: Path) -> None:
    """The real corpus on a fresh clone: datasets/wordnet_glosses.tar.bz2 (unpacked on
    first use), 45 lexicographer classes split 27/9/9, 5-way 1-shot."""
    config = write_config(
        tmp_path,
        "wordnet",
        experiment_name="wordnet",
        dataset_name="wordnet_glosses",
        dataset_path="wordnet_glosses",
        train_val_test_split=[0.6, 0.2, 0.2],
        num_classes_per_set=5,
        num_samples_per_class=1,
        num_target_samples=3,
        vocab_size=2000,
        total_iter_per_epoch=2,
        total_epochs=1,
    )
    done = train(config, tmp_path / "experiments", timeout=600)
    assert done.returncode == 0, done.stderr
    summary = read_json(tmp_path / "experiments" / "wordnet" / "test_summary.json")
    assert summary["best_single"]["num_tasks"] == 6
    manifest = read_json(tmp_path / "experiments" / "wordnet" / "manifest.json")
    assert manifest["runs"][0]["dataset"]["archive"].endswith("wordnet_glosses.tar.bz2")


def test_bad_text_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data" / "tinytext"
    data.mkdir(parents=True)
    (data / "rows.jsonl").write_text('{"text": "fine", "label": "a"}\n{"label": "b"}\n')
    config = write_config(tmp_path)
    result = train(config, tmp_path / "experiments", DATASET_DIR=str(tmp_path / "data"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if "error:" in ln]
    assert "rows.jsonl: line 2: no 'text' column" in line
    assert not (tmp_path / "experiments" / "tiny").exists()
    hub = write_config(
        tmp_path, "hub", backbone="hf", backbone_kwargs={"model": "bert-base-uncased"}
    )
    write_rows(data, per_class=8)
    (data / "rows.jsonl").unlink()
    result = train(hub, tmp_path / "experiments", DATASET_DIR=str(tmp_path / "data"))
    assert result.returncode == 2 and "runs offline" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "experiments" / "tiny").exists()


def test_a_resumed_run_tokenizes_with_the_tokenizer_its_folder_kept(tmp_path: Path) -> None:
    """The experiment's tokenizer/ wins over the one beside the data: another tokenizer
    put there (a new tokenizers release, a hand edit) is replaced, not used."""
    from metasuite.data.text.tokenizer import train_wordpiece

    data = tmp_path / "data"
    write_rows(data / "tinytext")
    config = write_config(tmp_path, total_epochs_before_pause=1)
    env = {"DATASET_DIR": str(data)}
    paused = train(config, tmp_path / "experiments", **env)
    assert paused.returncode == 3, paused.stderr
    folder = tmp_path / "experiments" / "tiny"
    kept = (folder / "tokenizer" / "tokenizer.json").read_text()
    (beside,) = data.glob("tinytext.text.*.tokenizer.json")
    beside.write_text(train_wordpiece(["other words entirely"] * 3, 120))
    resumed = train(config, tmp_path / "experiments", **env)
    assert resumed.returncode == 0, resumed.stderr
    assert beside.read_text() == kept
    runs = read_json(folder / "manifest.json")["runs"]
    assert len({run["dataset"]["split_hash"] for run in runs}) == 1
