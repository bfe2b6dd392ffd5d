"""``metasuite quickstart``: the shipped ten-minute suite, end to end in a tiny form."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builder_helpers import train_env
from metasuite import cli
from metasuite.commands.quickstart import QUICKSTART_SUITE
from metasuite.config import REPO_ROOT, load_config
from metasuite.suite.sweep import expand, load_suite


def test_quickstart_suite_is_the_paper_setting_made_short(tmp_path):
    experiments = expand(load_suite(QUICKSTART_SUITE, root=tmp_path))
    assert [e.name for e in experiments] == [
        "quickstart_omniglot_maml_5way_1shot_s0",
        "quickstart_omniglot_maml++_5way_1shot_s0",
    ]
    for exp in experiments:
        method = "maml++" if "maml++" in exp.name else "maml"
        paper = load_config(
            REPO_ROOT / "experiment_config" / f"omniglot_{method}_5way_1shot_s0.json"
        )
        differs = {
            k for k, v in json.loads(json.dumps(exp.config.__dict__)).items()
            if json.loads(json.dumps(getattr(paper, k))) != v
        }  # fmt: skip
        # Only the length (and the name) differ from the paper's experiment.
        assert differs <= {"experiment_name", "total_epochs", "total_iter_per_epoch",
                           "total_epochs_before_pause"}, differs  # fmt: skip
        assert exp.config.total_epochs * exp.config.total_iter_per_epoch < 1000
        # Generated files go under the given root, never beside the paper suite's.
        assert exp.config_path.parent == tmp_path / "experiment_config"
        assert exp.script_path.parent == tmp_path / "experiment_scripts"


@pytest.mark.slow
def test_quickstart_generates_runs_and_reports(tmp_path):
    before = sorted(p.name for p in (REPO_ROOT / "experiment_config").iterdir())
    command = [
        sys.executable, "-m", "metasuite", "quickstart", "--experiments-root", str(tmp_path),
        "--epochs", "1", "--iters-per-epoch", "2", "--eval-tasks", "8",
    ]  # fmt: skip
    done = subprocess.run(command, env=train_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    base = tmp_path / "quickstart"
    out = done.stdout
    assert "| MAML | ensemble | " in out and "| MAML++ | ensemble | " in out
    assert f"report: {base / 'report' / 'index.md'}" in out
    plots = [line.split(maxsplit=1)[1] for line in out.splitlines() if line.startswith("plot:")]
    assert len(plots) == 2
    for plot in plots:
        assert Path(plot).read_bytes()[:4] == b"\x89PNG"
    # stderr is a pipe here: the bar (drawn on a terminal, tests/test_progress.py) stays
    # out of the log, while the per-experiment lines still arrive.
    assert "\r" not in done.stderr and "it/s" not in done.stderr
    assert "starting quickstart_omniglot_maml++_5way_1shot_s0" in done.stderr
    for name in (
        "quickstart_omniglot_maml_5way_1shot_s0",
        "quickstart_omniglot_maml++_5way_1shot_s0",
    ):
        test = json.loads((base / name / "test_summary.json").read_text())
        assert test["ensemble"]["num_tasks"] == 8
        assert (base / "experiment_config" / f"{name}.json").is_file()
    assert sorted(p.name for p in (REPO_ROOT / "experiment_config").iterdir()) == before

    # Again: both done, so nothing is trained and the same report comes back.
    again = subprocess.run(command, env=train_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "starting" not in again.stderr
    assert again.stdout.split("\n", 1)[1] == out.split("\n", 1)[1]


def test_bar_counts_live_progress_else_the_checkpoint(tmp_path):
    from metasuite.commands.quickstart import _iterations
    from metasuite.training.experiment_dir import ExperimentDir

    exp = ExperimentDir(tmp_path / "exp")
    exp.create()
    assert _iterations(exp) == 0
    config = load_config(REPO_ROOT / "experiment_config" / "omniglot_maml_5way_1shot_s0.json")
    exp.write_state("running", config=config, epoch=1, iteration=100,
                    best_val_accuracy=None, best_val_epoch=None)  # fmt: skip
    assert _iterations(exp) == 100
    exp.write_live_progress(137)  # between two checkpoints
    assert _iterations(exp) == 137
    exp.write_state("done", config=config, epoch=2, iteration=200,
                    best_val_accuracy=None, best_val_epoch=None)  # fmt: skip
    assert _iterations(exp) == 200  # the last live write may lag the end of the run


@pytest.mark.parametrize("flag", ["--epochs", "--iters-per-epoch", "--eval-tasks", "--jobs"])
def test_a_size_below_one_names_the_flag_typed_and_writes_nothing(tmp_path, capsys, flag):
    argv = ["quickstart", "--experiments-root", str(tmp_path), flag, "0"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{flag} must be >= 1, got 0" in err
    assert not (tmp_path / "quickstart").exists()
