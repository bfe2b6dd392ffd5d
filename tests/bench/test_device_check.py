"""bench/device_check.sh in its CPU form (what CI can run): one JSON object, last line."""

from __future__ import annotations

import json
import subprocess

from builder_helpers import train_env
from metasuite.config import REPO_ROOT


def test_device_check_cpu_half_reports_backends_and_an_exact_resume():
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "bench" / "device_check.sh"), "--cpu"],
        env=train_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["mode"] == "cpu" and "CUDA half not run" in report["note"]
    assert "running the CPU half" in done.stderr
    assert set(report["backends"]) == {"vmap", "grouped", "auto"}
    assert report["backends"]["auto"]["runs"] == "grouped"
    for backend in report["backends"].values():
        assert backend["same_math"], backend
        assert backend["grad_rel_diff_fp64"] < 1e-6
    assert report["speed"].startswith("skipped")
    resume = report["resume"]
    assert resume["first_run_killed_by"] == "SIGKILL"
    assert resume["resumed_from_checkpoint"] and resume["resumed_exit"] == 0
    assert resume["identical_to_uninterrupted"] is True  # exact on the CPU
    assert report["ok"] is True
