"""bench/ensemble_members.py: the members of a finished run's test ensemble, one by one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builder_helpers import read_json, train, train_env, write_config
from metasuite.config import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "ensemble_members.py"


def _members(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(folder), "--quiet", *extra],
        env=train_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_members_rebuild_the_builders_ensemble_and_best_single_exactly(tmp_path):
    config = write_config(tmp_path, total_epochs=3, max_models_to_save=3)
    done = train(config, tmp_path / "exp")
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "exp" / "tiny"
    before = sorted(p.name for p in folder.rglob("*"))
    run = _members(folder, "--out", str(tmp_path / "members.json"))
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in folder.rglob("*")) == before  # the folder is only read
    result = read_json(tmp_path / "members.json")
    test = read_json(folder / "test_summary.json")
    rows = result["members"]
    # Same members, same order (best validation first), numbered from 1 as printed.
    assert [r["epoch"] for r in rows] == [e + 1 for e in test["ensemble"]["epochs"]]
    assert len(rows) == 3
    # The first member is the builder's best single model; all members together are
    # its ensemble: the same weights on the same tasks give the same figures.
    assert rows[0]["accuracy_mean"] == test["best_single"]["accuracy_mean"]
    assert rows[0]["accuracy_ci95"] == test["best_single"]["accuracy_ci95"]
    assert rows[-1]["ensemble_so_far_mean"] == test["ensemble"]["accuracy_mean"]
    assert rows[-1]["ensemble_so_far_ci95"] == test["ensemble"]["accuracy_ci95"]
    assert rows[0]["ensemble_so_far_mean"] == rows[0]["accuracy_mean"]
    assert rows[0]["disagreement_with_best"] == 0.0
    assert rows[0]["either_right_with_best"] == rows[0]["accuracy_mean"]
    for row in rows[1:]:
        assert 0.0 <= row["disagreement_with_best"] <= 1.0
        assert rows[0]["accuracy_mean"] <= row["either_right_with_best"] <= 1.0
        assert 1 / 5 <= row["mean_top_probability"] <= 1.0  # 5-way: at least uniform
    assert "ensemble so far" in run.stdout and "members.json" in run.stdout


def test_a_folder_that_was_not_tested_is_a_user_error(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"experiment_name": "tiny"}))
    run = _members(folder)
    assert run.returncode == 2
    assert "test_summary.json" in run.stderr and "Traceback" not in run.stderr
    run = _members(tmp_path / "nowhere")
    assert run.returncode == 2
    assert "not an experiment folder" in run.stderr and "Traceback" not in run.stderr
