"""``metasuite tune`` end to end on tiny real trials: SIGKILL of the driver and its trials
mid-way, the same command again, then promotion to a suite and the report."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from metasuite.cli import main
from metasuite.search.engine import Study
from metasuite.search.spec import load_search
from metasuite.search.trials import validation_curve
from search_helpers import write_search


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return " Z " in stat  # a zombie: dead, not yet reaped by its adopter


def _manifest_runs(folder: Path) -> list[dict]:
    return json.loads((folder / "manifest.json").read_text())["runs"]


def test_sigkill_mid_search_then_the_same_command_finishes_the_study(tmp_path, capsys):
    search_file = write_search(tmp_path / "s", trials=4, epochs=3, iters=2)
    search = load_search(search_file)
    root = tmp_path / "experiments"
    command = [
        sys.executable, "-m", "metasuite", "tune", str(search_file), "--workers", "2",
        "--experiments-root", str(root), "--quiet",
    ]  # fmt: skip
    env = dict(os.environ, METASUITE_NUM_THREADS="1")
    driver = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:  # mid-way: as soon as some trial has validated an epoch
        deadline = time.monotonic() + 180
        while not any(validation_curve(f) for f in root.glob("tiny_t*")):
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no trial finished an epoch in 180 s"
            time.sleep(0.05)
        trials = _children(driver.pid)
        driver.send_signal(signal.SIGKILL)
        for pid in trials:  # the trials too, before they can checkpoint on SIGTERM
            os.kill(pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.communicate()
    assert trials, "the driver had no trial running"
    deadline = time.monotonic() + 30
    while not all(_gone(p) for p in trials):
        assert time.monotonic() < deadline
        time.sleep(0.05)

    before = {r.number: r for r in Study(search).rows()}
    killed = sorted(n for n, r in before.items() if r.state == "running")
    assert killed, before  # trials were cut off mid-run
    epochs_at_kill = {n: len(validation_curve(root / f"tiny_t{n}")) for n in before}
    # A trial may be killed still starting up, before its first run was recorded.
    recorded = {n for n in killed if (root / f"tiny_t{n}" / "manifest.json").exists()}
    assert recorded  # at least the trial that had validated an epoch

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "4 trials of 4" in again.stdout

    rows = Study(search).rows()
    assert [r.number for r in rows] == [0, 1, 2, 3]  # --trials 4 in total, numbers kept
    assert sorted(p.name for p in root.iterdir()) == [f"tiny_t{n}" for n in range(4)]
    for r in rows:
        folder = root / r.experiment
        assert r.experiment == f"tiny_t{r.number}" and r.state in ("complete", "pruned"), r
        curve = validation_curve(folder)
        assert len(curve) >= epochs_at_kill.get(r.number, 0)
        best_so_far = [max(curve[: i + 1]) for i in range(len(curve))]
        # each epoch reported once, in order, whatever the kill did
        assert r.intermediate == dict(enumerate(best_so_far, 1)), r
        if r.state == "complete":
            assert r.value == max(curve) and len(curve) == 3
        if r.number in before:  # re-attached trials keep their sampled values
            assert before[r.number].params == r.params
    for n in recorded:
        runs = _manifest_runs(root / f"tiny_t{n}")
        # killed; or, if the SIGTERM of its dying driver won the race, checkpointed
        assert runs[0]["status"] in ("killed", "interrupted") and len(runs) >= 2
        if epochs_at_kill[n]:  # it had an epoch checkpoint: resumed, not restarted
            assert runs[-1]["resumed_from"] is not None
            with (root / f"tiny_t{n}" / "summary_statistics.csv").open() as handle:
                assert [int(row["epoch"]) for row in csv.DictReader(handle)] == list(
                    range(len(validation_curve(root / f"tiny_t{n}")))
                )

    # The winners as an ordinary multi-seed suite, accepted by generate --check.
    assert main(["tune", str(search_file), "--promote", "2", "--seeds", "2"]) == 0
    promoted = search_file.with_name("search_best.toml")
    assert main(["generate", "--suite", str(promoted)]) == 0
    assert main(["generate", "--suite", str(promoted), "--check"]) == 0
    best = sorted((r for r in rows if r.state == "complete"), key=lambda r: -float(r.value))[0]
    config = json.loads(
        (
            search.root / "promoted" / "experiment_config" / f"search_best1_t{best.number}_s1.json"
        ).read_text()
    )
    assert config["train_seed"] == 1
    assert config["init_inner_loop_learning_rate"] == best.params["init_inner_loop_learning_rate"]
    assert config["number_of_training_steps_per_iter"] == best.params["inner_steps"]

    # status and report see the trials; the report has the search's table and plots.
    capsys.readouterr()
    assert main(["status", "--suite", str(search_file), "--experiments-root", str(root)]) == 0
    status = capsys.readouterr().out
    assert all(f"tiny_t{n}" in status for n in range(4))
    out = tmp_path / "report"
    args = ["--suite", str(search_file), "--experiments-root", str(root), "--out", str(out)]
    assert main(["report", *args, "--quiet"]) == 0
    with (out / "search" / "trials.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [t["trial"] for t in table] == ["0", "1", "2", "3"]
    assert [t["state"] for t in table] == [r.state for r in rows]
    assert (out / "search" / "optimization_history.png").stat().st_size > 1000
    assert "## Search" in (out / "index.md").read_text()
