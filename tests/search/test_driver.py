"""The driver's bookkeeping without training: pruning requests, counts, failed configs.

The experiments are stood in for by the files the builder writes (state.json and
summary_statistics.csv), so the pruner's decision, the end request and what the study
records can be checked exactly and in a second.
"""

from __future__ import annotations

import json

from metasuite.cli import main
from metasuite.search.driver import Driver
from metasuite.search.engine import Study
from metasuite.search.spec import load_search
from metasuite.suite.pool import Result, Slot, StopFlag
from metasuite.training.experiment_dir import ExperimentDir
from search_helpers import write_search


def _fake_epochs(folder, accuracies, status=None):
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{e},{a}\n" for e, a in enumerate(accuracies))
    (folder / "summary_statistics.csv").write_text("epoch,val_accuracy_mean\n" + rows)
    if status is not None:
        best = max(range(len(accuracies)), key=lambda e: (accuracies[e], -e))
        state = {"status": status, "best_val_accuracy": accuracies[best], "best_val_epoch": best}
        (folder / "state.json").write_text(json.dumps(state))


def test_pruned_trial_gets_an_end_request_and_each_epoch_is_reported_once(tmp_path):
    search = load_search(write_search(tmp_path / "s"))
    search.root.mkdir()
    study = Study(search)
    root = tmp_path / "experiments"
    driver = Driver(
        search, study, 2, [Slot(("cpu",))], root, env={}, stop=StopFlag(), report=lambda s: None
    )
    first = driver._next()
    assert first is not None and first.name == "tiny_t0" and first.script.is_file()
    _fake_epochs(root / "tiny_t0", [0.5, 0.9, 0.8], status="done")
    driver._finished(Result("tiny_t0", "done"))

    second = driver._next()
    assert second is not None and second.name == "tiny_t1"
    assert driver._next() is None  # --trials 2: the study is full
    _fake_epochs(root / "tiny_t1", [0.2])
    driver._tick(["tiny_t1"])
    request = ExperimentDir(root / "tiny_t1").end_requested()
    assert request is not None and "median pruner stopped trial 1 after epoch 1" in request
    driver._tick(["tiny_t1"])  # nothing new: nothing reported again
    _fake_epochs(root / "tiny_t1", [0.2, 0.3], status="pruned")
    driver._finished(Result("tiny_t1", "pruned"))

    rows = {r.number: r for r in study.rows()}
    assert rows[0].state == "complete" and rows[0].value == 0.9 and rows[0].best_epoch == 1
    # Reported as the best so far, once per epoch, step = epochs done.
    assert rows[0].intermediate == {1: 0.5, 2: 0.9, 3: 0.9}
    assert rows[1].state == "pruned" and rows[1].intermediate == {1: 0.2, 2: 0.3}
    assert rows[1].experiment == "tiny_t1"
    assert ExperimentDir(root / "tiny_t0").end_requested() is None


def test_trial_that_ended_unwatched_is_told_on_restart(tmp_path):
    """A driver killed after its trial finished but before telling the study: the next
    driver re-attaches the RUNNING trial, finds it done and tells it, without rerunning."""
    search = load_search(write_search(tmp_path / "s"))
    search.root.mkdir()
    root = tmp_path / "experiments"
    _, params = Study(search).claim()
    (root / "tiny_t0").mkdir(parents=True)
    _fake_epochs(root / "tiny_t0", [0.4, 0.6], status="done")

    study = Study(search)
    driver = Driver(
        search, study, 1, [Slot(("cpu",))], root, env={}, stop=StopFlag(), report=lambda s: None
    )
    assert study.orphans() == [0]  # its owner (this pid, same host) is not a live driver
    summary = driver.run()
    assert summary.resumed == [0] and summary.ended == {0: "complete"}
    (row,) = study.rows()
    assert (row.number, row.state, row.value, row.params) == (0, "complete", 0.6, params)


def test_sampled_values_that_make_an_invalid_config_fail_only_that_trial(tmp_path, capsys):
    space = '[space.norm_layer]\ntype = "categorical"\nchoices = ["no_such_norm"]\n'
    search_file = write_search(tmp_path / "s", space=space)
    root = tmp_path / "experiments"
    code = main(["tune", str(search_file), "--trials", "2", "--experiments-root", str(root)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "2 trials of 2 (2 fail)" in out
    rows = Study(load_search(search_file)).rows()
    assert [r.state for r in rows] == ["fail", "fail"]
    assert all("invalid config" in r.message and "norm_layer" in r.message for r in rows)
    assert not root.exists()  # nothing was trained


def test_restarted_driver_waits_for_the_killed_drivers_trial_process(tmp_path):
    """The trial of a SIGKILLed driver gets SIGTERM and stops on its own; a driver started
    at once waits for it instead of skipping the trial as running elsewhere."""
    import socket
    import subprocess
    import sys
    import threading
    import time

    search = load_search(write_search(tmp_path / "s"))
    search.root.mkdir()
    root = tmp_path / "experiments"
    Study(search).claim()  # trial 0, RUNNING, its driver gone
    folder = root / "tiny_t0"
    folder.mkdir(parents=True)
    previous = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    state = {"status": "running", "pid": previous.pid, "host": socket.gethostname()}
    (folder / "state.json").write_text(json.dumps(state))

    def previous_process_checkpoints_and_exits() -> None:
        time.sleep(1.5)
        _fake_epochs(folder, [0.3, 0.7], status="done")  # (here: it had finished)
        previous.kill()
        previous.wait()

    threading.Thread(target=previous_process_checkpoints_and_exits).start()
    study = Study(search)
    lines: list[str] = []
    driver = Driver(
        search, study, 1, [Slot(("cpu",))], root, env={}, stop=StopFlag(), report=lines.append
    )
    start = time.monotonic()
    summary = driver.run()
    assert time.monotonic() - start >= 1.5, lines
    assert any(f"waiting for its previous process (pid {previous.pid})" in s for s in lines)
    assert summary.ended == {0: "complete"}
    assert study.rows()[0].value == 0.7
