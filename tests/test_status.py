"""metasuite status: one line per experiment, each state recognised from its folder."""

from __future__ import annotations

import json

import pytest

from metasuite import status as st
from metasuite.cli import main
from synthetic_experiments import dead_pid, make_config, write_experiment

CURVES = [(0.5, 0.45), (0.7, 0.6), (0.8, 0.65)]
TEST = (0.9, 0.01, 0.88, 0.012)


@pytest.fixture
def suite(tmp_path):
    root, configs = tmp_path / "experiments", tmp_path / "experiment_config"
    root.mkdir()
    states = {
        "exp_not_started": dict(status=None),
        "exp_running": dict(status="running", curves=CURVES[:1]),
        "exp_paused": dict(status="paused", curves=CURVES[:2]),
        "exp_failed": dict(status="failed", curves=CURVES[:1]),
        "exp_done": dict(status="done", curves=CURVES, test=TEST),
        "exp_killed": dict(status="running", curves=CURVES[:2], pid=dead_pid()),
        "exp_killed_nockpt": dict(status="running", curves=[], pid=dead_pid(), checkpoint=False),
        "exp_interrupted": dict(status="interrupted", curves=CURVES[:2]),
        "exp_elsewhere": dict(status="running", curves=CURVES[:1], host="some-other-host"),
    }
    for i, (name, kwargs) in enumerate(states.items()):
        write_experiment(root, make_config(name, i), generated=configs, **kwargs)
    return root, configs


def statuses(root, configs, only=None):
    return {e.name: st.read_status(e) for e in st.list_suite(root, configs, only)}


def test_each_state_is_recognised(suite):
    got = statuses(*suite)
    assert {name: s.state for name, s in got.items()} == {
        "exp_not_started": st.NOT_STARTED,
        "exp_running": st.RUNNING,
        "exp_paused": st.PAUSED,
        "exp_failed": st.FAILED,
        "exp_done": st.DONE,
        "exp_killed": st.KILLED,
        "exp_killed_nockpt": st.KILLED_NO_CHECKPOINT,
        "exp_interrupted": st.INTERRUPTED,
        "exp_elsewhere": st.RUNNING_ELSEWHERE,
    }
    done = got["exp_done"]
    assert (done.epoch, done.total_epochs) == (3, 4)
    assert (done.iteration, done.total_iterations) == (30, 40)
    assert done.best_val_accuracy == 0.65 and done.best_val_epoch == 2
    assert done.test_accuracy == 0.9
    assert "gone" in got["exp_killed"].detail
    # Not started: the totals come from the generated config.
    assert got["exp_not_started"].total_epochs == 4
    assert got["exp_not_started"].total_iterations == 40


def test_table_has_one_line_per_experiment_with_progress(suite):
    table = st.format_status_table(list(statuses(*suite).values()))
    lines = table.splitlines()
    assert len(lines) == 1 + 9 + 1  # header, experiments, count line
    done = next(line for line in lines if line.startswith("exp_done "))
    assert "3/4" in done and "30/40" in done
    assert "65.00% @2" in done and "90.00%" in done
    paused = next(line for line in lines if line.startswith("exp_paused "))
    assert "2/4" in paused and "20/40" in paused
    # Test accuracy is only shown once an experiment is done.
    assert "90.00%" not in paused
    assert lines[-1].startswith("9 experiments:")


def test_pid_alive(suite):
    import os

    assert st.pid_alive(os.getpid())
    assert not st.pid_alive(dead_pid())
    assert not st.pid_alive(0)


def test_unreadable_state_and_invalid_config_are_listed(tmp_path):
    root, configs = tmp_path / "exp", tmp_path / "cfg"
    write_experiment(root, make_config("broken", 0), status="done", curves=CURVES)
    (root / "broken" / "state.json").write_text("{not json")
    configs.mkdir()
    (configs / "typo.json").write_text(json.dumps({"batch_sise": 3}))
    got = statuses(root, configs)
    assert got["broken"].state == st.UNREADABLE
    assert "state.json" in got["broken"].detail
    assert got["typo"].state == st.INVALID_CONFIG
    assert "batch_sise" in got["typo"].detail


def test_folders_without_generated_config_are_included(tmp_path):
    root = tmp_path / "exp"
    write_experiment(root, make_config("by_hand", 0), status="paused", curves=CURVES[:1])
    (root / "report").mkdir()  # not an experiment: no config/state/manifest
    (root / "report" / "index.md").write_text("# report")
    got = statuses(root, tmp_path / "missing")
    assert list(got) == ["by_hand"]
    assert got["by_hand"].state == st.PAUSED


def test_cli_status_only_pattern(suite, capsys):
    root, configs = suite
    assert main(["status", "--root", str(root), "--configs", str(configs), "--only", "*kill*"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in out[1:-1]]
    assert names == ["exp_killed", "exp_killed_nockpt"]
    assert main(["status", "--root", str(root), "--suite", str(configs), "--only", "done"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[1:-1]] == ["exp_done"]


def test_cli_status_default_root_from_environment(suite, capsys, monkeypatch):
    root, configs = suite
    monkeypatch.setenv("METASUITE_EXPERIMENTS_ROOT", str(root))
    assert main(["status", "--configs", str(configs)]) == 0
    assert "exp_paused" in capsys.readouterr().out


def test_cli_status_missing_root_is_a_user_error(tmp_path, capsys):
    assert main(["status", "--root", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "--root" in err and "no such folder" in err and len(err.splitlines()) == 1
