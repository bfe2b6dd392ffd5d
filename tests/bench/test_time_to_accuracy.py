"""bench/time_to_accuracy.py: a wall-clock budget and validation probes on the real builder."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from builder_helpers import read_json, summary_rows, train_env, write_config
from metasuite.config import REPO_ROOT
from metasuite.errors import UserError

SCRIPT = REPO_ROOT / "bench" / "time_to_accuracy.py"


def _module():
    spec = importlib.util.spec_from_file_location("time_to_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _bench(config: Path, root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(config), "--experiments-root", str(root),
         "--out", str(out), "--quiet", *extra],
        env=train_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _curve(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_budget_ends_training_at_an_epoch_end_and_runs_the_normal_test(tmp_path):
    config = write_config(tmp_path, total_epochs=3)
    done = _bench(config, tmp_path / "exp", tmp_path / "out", "--minutes", "0.0001",
                  "--val-every", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = read_json(tmp_path / "out" / "tiny.json")
    # One epoch always (something to test); the next would overrun the budget.
    assert (result["epochs"], result["iterations"]) == (1, 6)
    assert result["total_epochs_in_config"] == 3
    test = read_json(tmp_path / "exp" / "tiny" / "test_summary.json")
    assert result["test"] == test
    assert test["ensemble"]["num_tasks"] == 8 and test["ensemble"]["epochs"] == [0]
    # What it prints names epochs from 1, as every log line does (the file keeps index 0).
    assert "(epochs 1), best single" in done.stdout and "% (epoch 1), 8 tasks" in done.stdout
    rows = _curve(tmp_path / "out" / "tiny.csv")
    assert [(r["iteration"], r["kind"]) for r in rows] == [
        ("0", "probe"), ("2", "probe"), ("4", "probe"), ("6", "epoch"),
    ]  # fmt: skip
    walls = [float(r["wall_s"]) for r in rows]
    assert walls == sorted(walls) and walls[0] >= 0
    # The epoch point is the builder's own validation, as summary_statistics.csv has it.
    summary = _curve(tmp_path / "exp" / "tiny" / "summary_statistics.csv")
    assert rows[-1]["val_accuracy"] == summary[0]["val_accuracy_mean"]
    png = (tmp_path / "out" / "tiny.png").read_bytes()
    assert png.startswith(b"\x89PNG")


@pytest.mark.slow
def test_probes_leave_training_unchanged_and_a_resumed_run_is_one_curve(tmp_path):
    config = write_config(tmp_path, total_epochs=2)
    plain = _bench(config, tmp_path / "plain", tmp_path / "o1", "--minutes", "60",
                   "--val-every", "0")  # fmt: skip
    probed = _bench(config, tmp_path / "probed", tmp_path / "o2", "--minutes", "60",
                    "--val-every", "3")  # fmt: skip
    assert plain.returncode == probed.returncode == 0, plain.stderr + probed.stderr
    a, b = tmp_path / "plain" / "tiny", tmp_path / "probed" / "tiny"
    rows_a, rows_b = (summary_rows(folder) for folder in (a, b))  # all but wall times
    assert rows_a == rows_b and len(rows_a) == 2
    assert read_json(a / "test_summary.json") == read_json(b / "test_summary.json")

    # Paused after the first epoch (exit 3), then the same command again: one run.
    (tmp_path / "p").mkdir()
    paused = write_config(tmp_path / "p", total_epochs=2, total_epochs_before_pause=1)
    first = _bench(paused, tmp_path / "resumed", tmp_path / "o3", "--minutes", "60",
                   "--val-every", "3")  # fmt: skip
    assert first.returncode == 3, first.stderr
    second = _bench(paused, tmp_path / "resumed", tmp_path / "o3", "--minutes", "60",
                    "--val-every", "3")  # fmt: skip
    assert second.returncode == 0, second.stderr
    c = tmp_path / "resumed" / "tiny"
    whole, resumed = _curve(b / "time_to_accuracy.csv"), _curve(c / "time_to_accuracy.csv")
    assert [(r["iteration"], r["kind"]) for r in resumed] == [
        ("0", "probe"), ("3", "probe"), ("6", "epoch"), ("9", "probe"), ("12", "epoch"),
    ]  # fmt: skip
    for key in ("iteration", "val_accuracy", "val_loss", "kind"):
        assert [r[key] for r in resumed] == [r[key] for r in whole]
    walls = [float(r["wall_s"]) for r in resumed]
    assert walls == sorted(walls)  # the clock carries on from the checkpoint
    assert read_json(c / "test_summary.json") == read_json(b / "test_summary.json")
    assert read_json(tmp_path / "o3" / "tiny.json")["iterations"] == 12


def test_overlay_reads_reference_and_metasuite_summaries(tmp_path):
    tta = _module()
    reference = tmp_path / "reference.csv"
    reference.write_text(
        "epoch,epoch_run_time,train_loss_mean,val_accuracy_mean\n"
        "1,100.5,1.2,0.91\n2,99.5,1.0,0.95\n"
    )
    curve = tta.read_curve(reference, "reference", 500)
    assert curve.wall_s == [100.5, 200.0]
    assert curve.iteration == [500.0, 1000.0]
    assert curve.accuracy == [0.91, 0.95]
    ours = tmp_path / "summary_statistics.csv"
    ours.write_text("epoch,epoch_time_s,val_accuracy_mean\n0,10,0.5\n1,20,0.75\n")
    curve = tta.read_curve(ours, "metasuite", 100)
    assert (curve.wall_s, curve.iteration, curve.accuracy) == ([10, 30], [100, 200], [0.5, 0.75])
    png = tta.plot([curve], tmp_path / "c.png", "title")
    assert png.read_bytes().startswith(b"\x89PNG")


def test_plot_axes_options(tmp_path):
    """--log-iterations and --ymin reach the figure; without them the axes are as before."""
    tta = _module()
    curve = tta.Curve("x", [10.0, 600.0], [0.0, 5000.0], [0.5, 0.99])
    plain = tta.figure([curve], "t")
    assert plain.axes[1].get_xscale() == "linear"
    assert plain.axes[0].get_ylim()[0] < 50
    tuned = tta.figure([curve], "t", log_iterations=True, ymin=90.0)
    assert tuned.axes[1].get_xscale() == "symlog"
    assert tuned.axes[0].get_ylim()[0] == 90.0
    summary = tmp_path / "summary_statistics.csv"
    summary.write_text("epoch,epoch_time_s,val_accuracy_mean\n0,10,0.5\n1,20,0.95\n")
    png = tmp_path / "x.png"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--plot-only", str(png), "--log-iterations",
         "--ymin", "90", "--overlay", str(summary)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert png.read_bytes().startswith(b"\x89PNG")
    for bad in ("100", "-1", "nan"):
        with pytest.raises(SystemExit) as exit_info:
            tta.parse_args(["--plot-only", str(png), "--ymin", bad, "--overlay", str(summary)])
        assert exit_info.value.code == 2


def test_overlay_without_the_needed_columns_is_a_user_error(tmp_path):
    tta = _module()
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,accuracy\n0,0.5\n")
    with pytest.raises(UserError, match=r"bad\.csv: expected columns .*found: accuracy, epoch"):
        tta.read_curve(bad, "x", 500)
    text = tmp_path / "text.csv"
    text.write_text("epoch,epoch_run_time,val_accuracy_mean\n1,fast,0.5\n")
    with pytest.raises(UserError, match="not a number"):
        tta.read_curve(text, "x", 500)
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), "--plot-only", str(tmp_path / "x.png"),
         "--overlay", str(tmp_path / "nope.csv")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: --overlay {tmp_path / 'nope.csv'}: cannot read it (No such file or directory)"
    ]
