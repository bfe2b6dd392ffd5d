"""Every meta-learner through ``metasuite train`` on real Omniglot: killed with SIGKILL
and resumed, it ends bit for bit where an uninterrupted run ends; the manifest records
the learner; a checkpoint of another learner is refused in one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from builder_helpers import killed_and_resumed, read_json, train, write_config
from meta_learner_helpers import LEARNER_SETTINGS, REPTILE

pytestmark = pytest.mark.slow

# Every learner but MAML (whose resume the builder tests cover); Reptile at epsilon 1.0,
# Baseline++ with the body fine-tuned too: every evaluation path resumes exactly.
LEARNERS: dict[str, dict[str, Any]] = {
    name: settings for name, settings in LEARNER_SETTINGS.items() if name != "maml"
}
LEARNERS["reptile"] = {**REPTILE, "meta_learning_rate": 1.0}
LEARNERS["baseline_pp"] = {**LEARNER_SETTINGS["baseline_pp"], "finetune_body": True}


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("metasuite train: error:")]


@pytest.mark.parametrize("learner", list(LEARNERS))
def test_sigkill_resumes_exactly_and_the_manifest_records_the_learner(
    learner: str, tmp_path: Path, omniglot_folder: Path
) -> None:
    folder = killed_and_resumed(write_config(tmp_path, **LEARNERS[learner]), tmp_path)
    manifest = read_json(folder / "manifest.json")
    assert len(manifest["runs"]) == 2
    assert {run["meta_learner"] for run in manifest["runs"]} == {learner}
    assert json.loads((folder / "config.json").read_text())["meta_learner"] == learner


def test_a_maml_checkpoint_is_refused_by_another_learner(
    tmp_path: Path, omniglot_folder: Path
) -> None:
    root = tmp_path / "experiments"
    paused = train(write_config(tmp_path, total_epochs_before_pause=1), root)
    assert paused.returncode == 3, paused.stderr
    meta_sgd = write_config(
        tmp_path, "meta_sgd", total_epochs_before_pause=1, meta_learner="meta_sgd"
    )
    refused = train(meta_sgd, root)
    assert refused.returncode == 2
    (error,) = error_lines(refused.stderr)
    assert 'meta_learner: "maml" -> "meta_sgd"' in error
    # Even forced past the config check, the checkpoint itself is refused.
    forced = train(meta_sgd, root, "--force")
    assert forced.returncode == 2
    (error,) = error_lines(forced.stderr)
    assert "trained with meta_learner 'maml', this config says 'meta_sgd'" in error
    assert read_json(root / "tiny" / "state.json")["epoch"] == 1


def test_reptile_with_second_order_is_one_line(tmp_path: Path, omniglot_folder: Path) -> None:
    config = write_config(tmp_path, **{**LEARNERS["reptile"], "second_order": True})
    result = train(config, tmp_path / "experiments")
    assert result.returncode == 2
    (error,) = error_lines(result.stderr)
    assert 'second_order is true but meta_learner is "reptile"' in error
    assert not (tmp_path / "experiments" / "tiny").exists()


def test_protonet_with_an_inner_loop_key_is_one_line(tmp_path: Path, omniglot_folder: Path) -> None:
    config = write_config(
        tmp_path, **{**LEARNERS["protonet"], "number_of_training_steps_per_iter": 3}
    )
    result = train(config, tmp_path / "experiments")
    assert result.returncode == 2
    (error,) = error_lines(result.stderr)
    assert 'number_of_training_steps_per_iter is 3 but meta_learner is "protonet"' in error
    assert not (tmp_path / "experiments" / "tiny").exists()
