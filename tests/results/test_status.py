"""metasuite status: one line per experiment, each state recognised from its folder."""

from __future__ import annotations

import json

import pytest

from metasuite.cli import main
from metasuite.results import status as st
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
    # Best val 65% in the third epoch: stored as index 2, shown 1-based as the log counts.
    assert "65.00% @3" in done and "90.00%" in done
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


def test_pid_alive_a_zombie_is_dead():
    """A killed child its parent has not reaped yet still answers os.kill(pid, 0)."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{proc.pid}/stat")
    try:
        deadline = time.monotonic() + 30
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        assert not st.pid_alive(proc.pid)
    finally:
        proc.wait()


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


def _names(out: str) -> list[str]:
    """Experiment names of a status table (between the header and the count line)."""
    return [line.split()[0] for line in out.splitlines()[1:-1]]


def test_cli_status_only_pattern(suite, capsys):
    root, configs = suite
    args = ["status", "--experiments-root", str(root), "--configs", str(configs)]
    assert main([*args, "--only", "*kill*"]) == 0
    assert _names(capsys.readouterr().out) == ["exp_killed", "exp_killed_nockpt"]
    assert main([*args, "--only", "done"]) == 0
    assert _names(capsys.readouterr().out) == ["exp_done"]
    # Repeatable, as in generate, run-suite and submit.
    assert main([*args, "--only", "done", "--only", "*paused"]) == 0
    assert _names(capsys.readouterr().out) == ["exp_done", "exp_paused"]  # file-name order


def test_cli_status_older_option_names_still_work(suite, capsys):
    """--root (now --experiments-root) and --suite naming the configs folder."""
    root, configs = suite
    assert main(["status", "--root", str(root), "--suite", str(configs), "--only", "done"]) == 0
    assert _names(capsys.readouterr().out) == ["exp_done"]


def test_cli_status_suite_file_gives_its_generated_configs(tmp_path, capsys):
    """status --suite FILE lists the experiments that generate --suite FILE wrote."""
    from suite_helpers import TINY_NAMES, write_suite

    suite = write_suite(tmp_path)
    assert main(["generate", "--suite", str(suite)]) == 0
    capsys.readouterr()
    root = tmp_path / "experiments"
    root.mkdir()
    assert main(["status", "--experiments-root", str(root), "--suite", str(suite)]) == 0
    out = capsys.readouterr().out
    assert _names(out) == sorted(TINY_NAMES)
    assert out.splitlines()[-1] == f"{len(TINY_NAMES)} experiments: {len(TINY_NAMES)} not started"
    assert main(["status", "--suite", str(suite), "--configs", str(tmp_path)]) == 2
    assert "give one" in capsys.readouterr().err


def test_cli_status_default_root_from_environment(suite, capsys, monkeypatch):
    root, configs = suite
    monkeypatch.setenv("METASUITE_EXPERIMENTS_ROOT", str(root))
    assert main(["status", "--configs", str(configs)]) == 0
    assert "exp_paused" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--experiments-root", "--configs"])
def test_cli_status_missing_folder_is_a_user_error(tmp_path, capsys, option):
    assert main(["status", option, str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert option in err and "no such folder" in err and len(err.splitlines()) == 1


def test_summary_statistics_that_are_not_utf8_read_as_nan(tmp_path):
    # Used to raise UnicodeDecodeError, a traceback out of `metasuite report`.
    path = tmp_path / "summary_statistics.csv"
    path.write_bytes(b"epoch,val_accuracy_mean\n0,0.5\n1,\xff\xfe\n")
    rows = st.read_summary_statistics(path)
    assert rows[0] == {"epoch": 0.0, "val_accuracy_mean": 0.5}
    assert rows[1]["epoch"] == 1.0 and rows[1]["val_accuracy_mean"] != rows[1]["val_accuracy_mean"]


def test_cli_status_only_matching_nothing_is_a_user_error(suite, capsys):
    """As in generate, run-suite, submit and report: a pattern that selects nothing is a
    mistake (exit 2, one line), not an empty table."""
    root, configs = suite
    args = ["status", "--experiments-root", str(root), "--configs", str(configs)]
    assert main([*args, "--only", "zzz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metasuite status: error: no experiment matches --only 'zzz'")
    assert len(err.strip().splitlines()) == 1


def test_status_count_line_says_one_experiment(suite, capsys):
    root, configs = suite
    args = ["status", "--experiments-root", str(root), "--configs", str(configs)]
    assert main([*args, "--only", "exp_done"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 experiment: 1 done"


def test_world_size_of_the_latest_run_is_shown(suite):
    """state.json records the run's data-parallel processes over all nodes; an older
    state.json without it reads as unknown."""
    root, configs = suite
    for name, world in (("exp_interrupted", 4), ("exp_running", 2), ("exp_paused", None)):
        path = root / name / "state.json"
        state = json.loads(path.read_text())
        state.pop("world_size", None)
        if world is not None:
            state["world_size"] = world
        path.write_text(json.dumps(state))
    got = statuses(root, configs)
    assert got["exp_interrupted"].world_size == 4 and got["exp_running"].world_size == 2
    assert got["exp_paused"].world_size is None
    lines = st.format_status_table(list(got.values())).splitlines()
    start = lines[0].index("ranks")  # a fixed-width column
    cells = {line.split()[0]: line[start:].split()[0] for line in lines[1:-1]}
    assert cells["exp_interrupted"] == "4" and cells["exp_running"] == "2"
    assert cells["exp_paused"] == "-"


def test_status_and_report_list_a_deep_or_doubled_json_file_not_a_traceback(tmp_path, capsys):
    """Issue 29: a 100,000-level config among the configs (and a state.json that names a
    key twice) are each shown as what is wrong with them; the other rows still show."""
    root, configs = tmp_path / "exp", tmp_path / "cfg"
    write_experiment(root, make_config("fine", 0), generated=configs, status="done", curves=CURVES)
    write_experiment(root, make_config("twice", 1), status="done", curves=CURVES)
    state = root / "twice" / "state.json"
    state.write_text(state.read_text().replace("{", '{"status": "done", ', 1))
    (configs / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    got = statuses(root, configs)
    assert got["fine"].state == st.DONE
    assert got["deep"].state == st.INVALID_CONFIG
    assert "nested 100,000 levels deep" in got["deep"].detail
    assert got["twice"].state == st.UNREADABLE
    assert "key 'status' appears twice" in got["twice"].detail
    args = ["--experiments-root", str(root), "--configs", str(configs)]
    assert main(["status", *args]) == 0
    assert main(["report", *args, "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RecursionError" not in err


def test_left_out_ensemble_epochs_are_shown_1_based(tmp_path):
    """Issue 29: "epochs [1]" (stored, 0-based) was shown beside the log's 1-based
    "epoch 2 left out"; everything read by people counts from 1."""
    from metasuite.results import report

    root, configs = tmp_path / "exp", tmp_path / "cfg"
    folder = write_experiment(
        root, make_config("omni_s0", 0), status="done", curves=CURVES, test=TEST, generated=configs
    )
    state = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({**state, "ensemble_left_out": [1]}))
    summary = json.loads((folder / "test_summary.json").read_text())
    summary["ensemble"]["left_out_epochs"] = [1]
    (folder / "test_summary.json").write_text(json.dumps(summary))
    assert "epochs [2] left out" in statuses(root, configs)["omni_s0"].detail
    files = report.write_report(root, configs, tmp_path / "r", quiet=True)
    tables = files.index.read_text() + (tmp_path / "r" / "results.md").read_text()
    assert "(incomplete: epochs [2] left out)" in tables
    assert "epochs [1] left out" not in tables


def test_a_regenerated_config_that_differs_from_a_started_run_is_said(tmp_path, capsys):
    """Issue 29: generate over a running or finished experiment's config changed
    nothing visibly (run-suite skips a done one; the run keeps its config.json)."""
    from metasuite.config import replace, save_config

    root, configs = tmp_path / "exp", tmp_path / "cfg"
    config = make_config("omni_s0", 0)
    write_experiment(root, config, status="done", curves=CURVES, test=TEST, generated=configs)
    assert statuses(root, configs)["omni_s0"].detail == ""
    save_config(replace(config, meta_learning_rate=0.01), configs / "omni_s0.json")
    got = statuses(root, configs)["omni_s0"]
    assert got.state == st.DONE
    assert got.detail.startswith("generated config differs from this run's config.json (")
    assert "meta_learning_rate: 0.001 -> 0.01" in got.detail
    assert main(["status", "--experiments-root", str(root), "--configs", str(configs)]) == 0
    assert "generated config differs" in capsys.readouterr().out
