"""``metasuite submit`` with stand-ins for sbatch/squeue on PATH (a real Slurm run is in
tests/suite/test_slurm_cluster.py)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from metasuite.cli import main
from suite_helpers import TINY_SUITE, write_suite

SLURM_TABLE = """
[slurm]
partition = "gpu"
gres = "gpu:1"
time = "4:00:00"
"""

FAKE_SBATCH = """#!/usr/bin/env bash
echo "$PWD|$*|${PYTHON:-}|${METASUITE_EXPERIMENTS_ROOT:-}" >> "$FAKE_LOG"
if [[ "$*" == *maml++_20way* ]]; then echo "sbatch: error: Invalid partition" >&2; exit 1; fi
echo "$(( $(wc -l < "$FAKE_LOG") + 100 ))"
"""

FAKE_SQUEUE = """#!/usr/bin/env bash
echo "maml_5way_1shot_s1"
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = write_suite(tmp_path, TINY_SUITE + SLURM_TABLE)
    assert main(["generate", "--suite", str(path)]) == 0
    return path


def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    # Only the stand-ins and the tools they use: no real Slurm client can be reached.
    for tool in ("bash", "wc"):
        (folder / tool).symlink_to(shutil.which(tool))
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.delenv("PYTHON", raising=False)
    return log


def test_generate_writes_one_sbatch_per_experiment(suite: Path) -> None:
    folder = suite.parent.parent / "experiment_scripts" / "slurm"
    names = sorted(p.name for p in folder.glob("*.sbatch"))
    assert len(names) == 6 and "maml++_20way_1shot_s0.sbatch" in names
    text = (folder / "maml_5way_1shot_s0.sbatch").read_text()
    assert "#SBATCH --partition=gpu" in text
    assert "--script experiment_scripts/maml_5way_1shot_s0.sh" in text
    assert os.access(folder / "maml_5way_1shot_s0.sbatch", os.X_OK)
    assert main(["generate", "--suite", str(suite), "--check"]) == 0


def test_submit_runs_sbatch_from_the_suite_root_and_skips_done_and_queued(
    suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    log = fake_bin(tmp_path, monkeypatch, sbatch=FAKE_SBATCH, squeue=FAKE_SQUEUE)
    runs = tmp_path / "runs"
    (runs / "maml_5way_1shot_s0").mkdir(parents=True)
    (runs / "maml_5way_1shot_s0" / "state.json").write_text(json.dumps({"status": "done"}))
    code = main(["submit", "--suite", str(suite), "--experiments-root", str(runs)])
    out = capsys.readouterr().out
    assert code == 1  # one sbatch failed; the others were still submitted
    assert "maml_5way_1shot_s0: done, skipped" in out
    assert "maml_5way_1shot_s1: a job of this name is already queued" in out
    assert "maml++_20way_1shot_s0: sbatch failed (exit 1): sbatch: error: Invalid partition" in out
    assert "maml++_5way_1shot_s0: submitted job 101" in out
    assert "2 submitted, 2 skipped, 2 failed" in out
    calls = log.read_text().splitlines()
    assert len(calls) == 4
    root = str(tmp_path.resolve())
    assert calls[0] == (
        f"{root}|--parsable experiment_scripts/slurm/maml++_5way_1shot_s0.sbatch|"
        f"{sys.executable}|{runs.resolve()}"
    )
    assert (tmp_path / "slurm_logs").is_dir()  # sbatch does not create the output folder


def test_dry_run_prints_commands_without_slurm(
    suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    log = fake_bin(tmp_path, monkeypatch)
    experiments = tmp_path / "results here"
    monkeypatch.delenv("PYTHON", raising=False)
    code = main(["submit", "--suite", str(suite), "--dry-run", "--only", "maml++_5*",
                 "--experiments-root", str(experiments)])  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    # The job's environment is part of the command: where results go, which python.
    env = f"METASUITE_EXPERIMENTS_ROOT={shlex.quote(str(experiments.resolve()))} "
    env += f"PYTHON={shlex.quote(sys.executable)} "
    assert out == [
        f"cd {tmp_path.resolve()} && {env}sbatch --parsable "
        f"experiment_scripts/slurm/maml++_5way_1shot_s{seed}.sbatch"
        for seed in (0, 1)
    ]
    assert not log.exists()


def test_no_sbatch_on_path_is_one_clear_line(
    suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    fake_bin(tmp_path, monkeypatch)
    assert main(["submit", "--suite", str(suite)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metasuite submit: error: sbatch not found on PATH")
    assert len(err.strip().splitlines()) == 1


def test_stale_sbatch_or_missing_slurm_table_is_refused(
    suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    fake_bin(tmp_path, monkeypatch, sbatch=FAKE_SBATCH)
    sbatch = tmp_path / "experiment_scripts" / "slurm" / "maml_5way_1shot_s0.sbatch"
    sbatch.write_text(sbatch.read_text().replace("gpu:1", "gpu:8"))
    assert main(["submit", "--suite", str(suite)]) == 2
    assert "1 generated files are stale or missing" in capsys.readouterr().err
    suite.write_text(TINY_SUITE)
    assert main(["submit", "--suite", str(suite)]) == 2
    assert "no [slurm] table" in capsys.readouterr().err
