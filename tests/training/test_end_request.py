"""An end request (what ``metasuite tune``'s pruner writes) ends a run at an epoch end."""

from __future__ import annotations

from pathlib import Path

from builder_helpers import read_json, summary_rows, train, write_config
from metasuite.errors import ExitCode
from metasuite.results.status import PRUNED, SuiteExperiment, read_status
from metasuite.training.experiment_dir import ExperimentDir


def test_end_request_ends_at_the_epoch_end_with_state_pruned(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        total_epochs=3,
        total_epochs_before_pause=1,
        total_iter_per_epoch=2,
        num_evaluation_tasks=4,
    )
    root = tmp_path / "experiments"
    folder = root / "tiny"
    first = train(config, root)
    assert first.returncode == ExitCode.PAUSED, first.stderr  # one epoch done, checkpointed
    ExperimentDir(folder).request_end("the median pruner stopped trial 3 after epoch 1")

    second = train(config, root)
    assert second.returncode == ExitCode.PRUNED, second.stderr
    state = read_json(folder / "state.json")
    assert state["status"] == "pruned" and state["epoch"] == 1 and state["iteration"] == 2
    assert "pruned after 1/3 epochs: the median pruner stopped trial 3" in state["message"]
    assert len(summary_rows(folder)) == 1
    assert (folder / "checkpoints" / "epoch_0000_iter_00000002.pt").is_file()
    assert not (folder / "test_summary.json").exists()  # ended early: not tested
    runs = read_json(folder / "manifest.json")["runs"]
    assert [r["status"] for r in runs] == ["paused", "pruned"]
    status = read_status(SuiteExperiment("tiny", folder, None))
    assert status.state == PRUNED and status.epoch == 1

    third = train(config, root)  # not resumable: it ends again at once
    assert third.returncode == ExitCode.PRUNED, third.stderr
    assert read_json(folder / "state.json")["iteration"] == 2


def test_end_request_after_a_mid_epoch_kill_finishes_that_epoch_first(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        total_epochs=3,
        total_iter_per_epoch=2,
        checkpoint_every_n_iters=1,
        num_evaluation_tasks=4,
    )
    root = tmp_path / "experiments"
    folder = root / "tiny"
    # SIGKILL after iteration 4 (the end of epoch 2), before its checkpoint: the newest
    # checkpoint is iteration 3's, in the middle of epoch 2.
    killed = train(config, root, METASUITE_FAULT="iteration:4")
    assert killed.returncode == -9, killed.stderr
    ExperimentDir(folder).request_end("asked mid-epoch")

    resumed = train(config, root)
    assert resumed.returncode == ExitCode.PRUNED, resumed.stderr
    state = read_json(folder / "state.json")
    assert (state["status"], state["epoch"], state["iteration"]) == ("pruned", 2, 4)
    assert len(summary_rows(folder)) == 2
    assert (folder / "checkpoints" / "epoch_0001_iter_00000004.pt").is_file()
