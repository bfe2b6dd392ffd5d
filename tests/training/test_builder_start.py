"""Where a run starts (continue_from_epoch, config check) and user errors, in-process.

No training here: checkpoints are small hand-made payloads, and every user error is
raised before the experiment folder is created or any data is decoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from builder_helpers import TINY, write_config
from metasuite import cli
from metasuite.config import from_dict, to_dict
from metasuite.errors import UserError
from metasuite.training.checkpoint import CheckpointStore
from metasuite.training.experiment_dir import ExperimentDir
from metasuite.training.runner import check_root_writable, choose_start


def _config(**changes: Any):
    return from_dict(TINY | changes)


def _payload(cfg, epoch: int, iteration: int) -> dict[str, Any]:
    return {
        "config": to_dict(cfg),
        "progress": {"epoch": epoch, "iteration": iteration},
        "learner": {"w": torch.full((2,), float(iteration))},
    }


@pytest.fixture
def folder(tmp_path: Path) -> tuple[ExperimentDir, CheckpointStore]:
    """An experiment with checkpoints at iterations 2, 6 (end of epoch 0), 8, 12 (epoch 1)."""
    exp = ExperimentDir(tmp_path / "tiny")
    exp.create()
    store = CheckpointStore(exp.checkpoints)
    cfg = _config()
    for iteration, epoch_end in ((2, None), (6, 0), (8, None), (12, 1)):
        store.save(_payload(cfg, iteration // 6, iteration), iteration, epoch_end)
    exp.write_summary([])
    exp.write_test_summary({"stale": True})
    return exp, store


def test_default_resumes_from_latest(folder) -> None:
    exp, store = folder
    payload = choose_start(_config(), exp, store, force=False)
    assert payload is not None and payload["progress"]["iteration"] == 12


def test_default_without_checkpoints_starts_fresh(tmp_path: Path) -> None:
    exp = ExperimentDir(tmp_path / "tiny")
    exp.create()
    assert choose_start(_config(), exp, CheckpointStore(exp.checkpoints), force=False) is None


def test_latest_without_checkpoints_is_an_error(tmp_path: Path) -> None:
    exp = ExperimentDir(tmp_path / "tiny")
    exp.create()
    with pytest.raises(UserError, match="no checkpoint"):
        choose_start(
            _config(continue_from_epoch="latest"),
            exp,
            CheckpointStore(exp.checkpoints),
            force=False,
        )


@pytest.mark.parametrize("mode", ["from_scratch", -1])
def test_from_scratch_deletes_previous_outputs(folder, mode) -> None:
    exp, store = folder
    assert choose_start(_config(continue_from_epoch=mode), exp, store, force=False) is None
    assert store.files() == []
    assert not exp.summary_path.exists() and not exp.test_summary_path.exists()


def test_epoch_number_resumes_there_and_drops_later_checkpoints(folder) -> None:
    exp, store = folder
    payload = choose_start(_config(continue_from_epoch=0), exp, store, force=False)
    assert payload is not None and payload["progress"]["iteration"] == 6
    assert [f.iteration for f in store.files()] == [2, 6]
    assert not exp.test_summary_path.exists()
    with pytest.raises(UserError, match=r"epochs available: 0"):
        choose_start(_config(continue_from_epoch=1), exp, store, force=False)


def test_changed_training_setting_is_refused_unless_forced(folder) -> None:
    exp, store = folder
    changed = _config(meta_learning_rate=0.01, num_evaluation_tasks=16)
    with pytest.raises(UserError) as info:
        choose_start(changed, exp, store, force=False)
    message = str(info.value)
    assert "meta_learning_rate: 0.001 -> 0.01" in message
    assert "num_evaluation_tasks: 8 -> 16" in message
    assert "--force" in message
    assert len(store.files()) == 4  # nothing deleted
    payload = choose_start(changed, exp, store, force=True)
    assert payload is not None and payload["progress"]["iteration"] == 12


def test_changed_non_training_setting_is_accepted(folder) -> None:
    exp, store = folder
    cfg = _config(total_epochs_before_pause=1, max_models_to_save=3, checkpoint_every_n_iters=5)
    assert choose_start(cfg, exp, store, force=False) is not None


# ------------------------------------------------------------------- user errors (CLI)


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["train", *argv])
    err = capsys.readouterr().err
    return code, err


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("metasuite train: error:")
    return line


def test_bad_config_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(TINY | {"batch_sise": 4}))
    code, err = _cli(capsys, "--config", str(path), "--gpus", "cpu")
    assert code == 2
    assert "batch_sise" in _one_error_line(err) and "batch_size" in err


def test_missing_dataset_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DATASET_DIR", str(tmp_path / "datasets"))
    (tmp_path / "datasets").mkdir()
    config = write_config(tmp_path, dataset_path="no_such_data", dataset_name="no_such_data")
    root = tmp_path / "experiments"
    code, err = _cli(
        capsys, "--config", str(config), "--gpus", "cpu", "--experiments-root", str(root)
    )
    assert code == 2
    assert "no_such_data" in _one_error_line(err)
    assert not (root / "tiny").exists()


def test_gpu_ids_without_cuda_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = write_config(tmp_path)
    root = tmp_path / "experiments"
    code, err = _cli(
        capsys, "--config", str(config), "--gpus", "0", "--experiments-root", str(root)
    )
    assert code == 2
    assert "CUDA is not available" in _one_error_line(err)
    assert not root.exists()


def test_bad_gpu_id_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    config = write_config(tmp_path)
    code, err = _cli(capsys, "--config", str(config), "--gpus", "3")
    assert code == 2
    assert "no GPU 3" in _one_error_line(err)


def test_unwritable_root_is_one_line(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = write_config(tmp_path)
    code, err = _cli(
        capsys, "--config", str(config), "--gpus", "cpu", "--experiments-root", str(blocker / "x")
    )
    assert code == 2
    assert "not writable" in _one_error_line(err)


def test_a_file_in_place_of_the_experiment_folder_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "tiny").write_text("not a folder")
    with pytest.raises(UserError, match=r"experiment folder .*tiny: cannot create it"):
        ExperimentDir(tmp_path / "tiny").create()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "checkpoints").write_text("")
    with pytest.raises(UserError, match=r"other/checkpoints: cannot create it"):
        ExperimentDir(tmp_path / "other").create()


def test_root_check_leaves_nothing_and_ignores_other_entries(tmp_path: Path) -> None:
    root = tmp_path / "experiments"
    root.mkdir()
    # Whatever else is in the root (another process's probe, a folder) does not matter.
    (root / f".write-test.{id(root)}").mkdir()
    before = sorted(p.name for p in root.iterdir())
    check_root_writable(root)
    assert sorted(p.name for p in root.iterdir()) == before


def test_negative_checkpoint_every_is_one_line(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path)
    code, err = _cli(capsys, "--config", str(config), "--gpus", "cpu", "--checkpoint-every", "-1")
    assert code == 2
    assert "checkpoint_every_n_iters" in _one_error_line(err)


# ------------------------------------------------------------------- a crash in the loop


class _Tasks:
    """Stand-in samplers: this test is about bookkeeping, not learning."""

    class _Sampler:
        def batch(self, indices):
            from metasuite.data.batch import TaskBatch

            t = len(indices)
            return TaskBatch(
                torch.zeros(t, 5, 1, 28, 28),
                torch.zeros(t, 5, dtype=torch.int64),
                torch.zeros(t, 5, 1, 28, 28),
                torch.zeros(t, 5, dtype=torch.int64),
                tuple(indices),
            )

    train = val = test = _Sampler()


class _CrashingLearner:
    def __init__(self) -> None:
        self.steps = 0

    def train_step(self, batch, epoch, *, total_tasks=None, sync_gradients=None):
        self.steps += 1
        if self.steps == 3:
            raise RuntimeError("out of memory (simulated)")
        return {"loss": 1.0, "accuracy": 0.5, "learning_rate": 0.001}

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_crash_marks_state_failed_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    from metasuite.training.builder import Builder

    exp = ExperimentDir(tmp_path / "tiny")
    exp.create()
    builder = Builder(
        _config(), _CrashingLearner(), _Tasks(), exp, device=torch.device("cpu"), quiet=True
    )
    with pytest.raises(RuntimeError, match="simulated"):
        builder.run()
    state = exp.read_state()
    assert state is not None
    assert state["status"] == "failed" and "out of memory (simulated)" in state["message"]
    assert state["iteration"] == 2  # the checkpoint after iteration 2 is the resume point
    assert [f.iteration for f in CheckpointStore(exp.checkpoints).files()] == [2]


def test_setting_the_learner_refuses_is_one_line_before_the_folder_exists(
    tmp_path: Path, capsys, omniglot_folder: Path
) -> None:
    config = write_config(tmp_path, dropout_rate_value=0.1)
    root = tmp_path / "experiments"
    code, err = _cli(
        capsys, "--config", str(config), "--gpus", "cpu", "--experiments-root", str(root)
    )
    assert code == 2
    assert "dropout_rate_value" in _one_error_line(err)
    assert not (root / "tiny").exists()


@pytest.mark.parametrize("variable", ["METASUITE_NPROC", "METASUITE_NUM_THREADS"])
def test_a_typo_in_a_count_variable_is_one_line(tmp_path: Path, capsys, monkeypatch, variable):
    monkeypatch.setenv(variable, "two")
    config = write_config(tmp_path)
    root = tmp_path / "experiments"
    code, err = _cli(
        capsys, "--config", str(config), "--gpus", "cpu", "--experiments-root", str(root)
    )
    assert code == 2
    assert f"${variable}='two'" in _one_error_line(err)
    assert not (root / "tiny").exists()


def _numerics(**changes: Any) -> dict[str, Any]:
    return {"backend": "loop", "precision": "fp32", "num_threads": 1} | changes


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"backend": "grouped"}, "backend: loop -> grouped"),
        ({"num_threads": 2}, "num_threads: 1 -> 2"),
        ({"world_size": 2}, "world_size: 1 -> 2"),
        ({"num_threads": 2, "world_size": 2}, "num_threads: 1 -> 2; world_size: 1 -> 2"),
    ],
)
def test_a_resume_may_change_how_the_run_executes_and_says_so_once(
    tmp_path: Path, change: dict[str, Any], expected: str, caplog
) -> None:
    """Issue 29, one rule: the resolved backend, CPU threads per rank and the world size
    only reorder float sums, so a resume may change them (a checkpoint resumes on any
    number of processes); each change is said once and handed to the manifest. Before,
    threads and backend were refused while the world size changed silently."""
    exp = ExperimentDir(tmp_path / "tiny")
    exp.create()
    store = CheckpointStore(exp.checkpoints)
    cfg = _config()
    store.save(_payload(cfg, 1, 6) | {"numerics": _numerics()}, 6, 0)
    changed: list[str] = []
    with caplog.at_level("WARNING", logger="metasuite"):
        payload = choose_start(
            cfg, exp, store, force=False, numerics=_numerics(**change), changed=changed
        )
    assert payload is not None
    assert "; ".join(changed) == expected
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert expected in warning and "not bit for bit" in warning
    caplog.clear()
    unchanged: list[str] = []
    choose_start(cfg, exp, store, force=False, numerics=_numerics(), changed=unchanged)
    assert unchanged == [] and not caplog.records


def test_an_older_checkpoint_without_numerics_is_compared_on_the_config_backend(
    folder, caplog
) -> None:
    exp, store = folder
    changed: list[str] = []
    grouped = _numerics(backend="grouped")
    with caplog.at_level("WARNING", logger="metasuite"):
        payload = choose_start(
            _config(backend="grouped"), exp, store, force=False, numerics=grouped, changed=changed
        )
    assert payload is not None and changed == ["backend: loop -> grouped"]
    assert any("backend: loop -> grouped" in r.getMessage() for r in caplog.records)


def test_a_changed_precision_is_a_training_setting_refused_unless_forced(folder) -> None:
    exp, store = folder
    with pytest.raises(UserError, match=r'precision: "fp32" -> "bf16"\. Use --force'):
        choose_start(_config(precision="bf16"), exp, store, force=False, numerics=_numerics())
    forced: list[str] = []
    bf16 = _numerics(precision="bf16")
    assert choose_start(
        _config(precision="bf16"), exp, store, force=True, numerics=bf16, forced=forced
    )
    assert forced == ['precision: "fp32" -> "bf16"']


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"evaluate_on_test_set_only": True}, "no checkpoints"),
        ({"continue_from_epoch": "latest"}, "no checkpoint"),
        ({"continue_from_epoch": 2}, "no checkpoint for the end of epoch 2"),
    ],
)
def test_a_start_that_needs_a_checkpoint_fails_before_the_folder_exists(
    tmp_path: Path, capsys, omniglot_folder: Path, changes: dict[str, Any], words: str
) -> None:
    """No "not started 0/?" folder is left behind by a start refused for want of a
    checkpoint."""
    config = write_config(tmp_path, **changes)
    root = tmp_path / "experiments"
    code, err = _cli(
        capsys, "--config", str(config), "--gpus", "cpu", "--experiments-root", str(root)
    )
    assert code == 2
    assert words in _one_error_line(err)
    assert not (root / "tiny").exists()


class _WatchingLearner(_CrashingLearner):
    """Records, at each step, the iteration that logs/live_progress.json shows."""

    def __init__(self, exp: ExperimentDir) -> None:
        super().__init__()
        self.exp = exp
        self.seen: list[int | None] = []

    def train_step(self, batch, epoch, *, total_tasks=None, sync_gradients=None):
        self.seen.append(self.exp.read_live_iteration())
        self.steps += 1
        return {"loss": 1.0, "accuracy": 0.5, "learning_rate": 0.001}


def _train_only(exp: ExperimentDir, learner: Any) -> None:
    from metasuite.training.builder import Builder, Outcome

    builder = Builder(_config(), learner, _Tasks(), exp, device=torch.device("cpu"), quiet=True)
    builder.validate = lambda: ([1.0], [0.5])  # type: ignore[method-assign]
    assert builder.train() is Outcome.DONE


def test_live_progress_moves_between_checkpoints(tmp_path: Path, monkeypatch) -> None:
    """A watcher (quickstart's bar) sees each iteration as it ends, not only the ones a
    checkpoint records (the tiny config checkpoints every 2 of its 6 iterations per epoch)."""
    from metasuite.training import builder

    monkeypatch.setattr(builder, "LIVE_PROGRESS_SECONDS", 0.0)
    exp = ExperimentDir(tmp_path / "tiny")
    exp.create()
    learner = _WatchingLearner(exp)
    _train_only(exp, learner)
    total = learner.steps
    assert total > 6 and learner.seen == list(range(total))
    assert exp.read_live_iteration() == total


def test_live_progress_is_throttled_and_never_stops_training(tmp_path: Path, monkeypatch) -> None:
    from metasuite.errors import DiskFullError
    from metasuite.training import builder

    writes: list[int] = []

    def full_disk(self: ExperimentDir, iteration: int) -> None:
        writes.append(iteration)
        raise DiskFullError("no space left on /x writing live_progress.json")

    monkeypatch.setattr(ExperimentDir, "write_live_progress", full_disk)
    monkeypatch.setattr(builder, "LIVE_PROGRESS_SECONDS", 3600.0)
    exp = ExperimentDir(tmp_path / "tiny")
    exp.create()
    learner = _WatchingLearner(exp)
    _train_only(exp, learner)
    # The run finished; only the forced write at the start went out within the hour.
    assert writes == [0]
    state = exp.read_state()
    assert state is not None and state["iteration"] == learner.steps
