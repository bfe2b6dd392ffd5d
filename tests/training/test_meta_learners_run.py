"""Every meta-learner through ``metasuite train`` on real Omniglot: killed with SIGKILL
and resumed, it ends bit for bit where an uninterrupted run ends; the manifest records
the learner; a checkpoint of another learner is refused in one line (exit 2)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from builder_helpers import read_json, summary_rows, train, write_config

pytestmark = pytest.mark.slow

# The tiny config's inner-loop settings, turned off or back to their defaults for the
# learners without an inner loop (which refuse them).
NO_INNER_LOOP: dict[str, Any] = {
    "second_order": False,
    "use_multi_step_loss_optimization": False,
    "learnable_per_layer_per_step_inner_loop_learning_rate": False,
    "per_step_bn_statistics": False,
    "number_of_training_steps_per_iter": 5,
    "number_of_evaluation_steps_per_iter": 5,
    "multi_step_loss_num_epochs": 10,
    "first_order_to_second_order_epoch": -1,
}

LEARNERS: dict[str, dict[str, Any]] = {
    "meta_sgd": {"meta_learner": "meta_sgd"},
    "anil": {"meta_learner": "anil"},
    "reptile": {
        "meta_learner": "reptile",
        "second_order": False,
        "use_multi_step_loss_optimization": False,
        "learnable_per_layer_per_step_inner_loop_learning_rate": False,
        "meta_learning_rate": 1.0,
    },
    "protonet": {"meta_learner": "protonet", **NO_INNER_LOOP},
    "baseline": {"meta_learner": "baseline", **NO_INNER_LOOP, "finetune_steps": 10},
    # Baseline++ with the body fine-tuned too: every evaluation path resumes exactly.
    "baseline_pp": {
        "meta_learner": "baseline_pp",
        **NO_INNER_LOOP,
        "finetune_steps": 5,
        "finetune_body": True,
    },
}


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("metasuite train: error:")]


@pytest.mark.parametrize("learner", list(LEARNERS))
def test_sigkill_resumes_exactly_and_the_manifest_records_the_learner(
    learner: str, tmp_path: Path, omniglot_folder: Path
) -> None:
    config = write_config(tmp_path, **LEARNERS[learner])
    reference_root, root = tmp_path / "reference", tmp_path / "killed"
    done = train(config, reference_root)
    assert done.returncode == 0, done.stderr
    reference = reference_root / "tiny"
    # Killed in the middle of epoch 0 (after its checkpoint at iteration 4), resumed.
    killed = train(config, root, METASUITE_FAULT="iteration:5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    final = train(config, root)
    assert final.returncode == 0, final.stderr
    folder = root / "tiny"
    assert summary_rows(folder) == summary_rows(reference)
    assert read_json(folder / "test_summary.json") == read_json(reference / "test_summary.json")
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
