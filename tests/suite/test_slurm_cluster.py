"""Rendered sbatch scripts on a real (local, one-node) Slurm: requeue after a pause and
after the time-limit warning signal. Skipped only when Slurm's binaries are absent
(install.sh installs them in CI)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from metasuite.suite import slurm
from slurm_cluster import LocalSlurm, missing_binaries
from suite_helpers import TINY_SUITE, write_suite

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(missing_binaries()),
        reason=f"Slurm binaries not installed: {' '.join(missing_binaries())} "
        "(apt-get install slurmctld slurmd slurm-client)",
    ),
]

NAME = "tiny_s0"
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")

# Stand-in for experiment_scripts/<name>.sh: the first run pauses (exit 3) or waits for
# SIGTERM and checkpoints (exit 4); the next run finishes (exit 0).
FAKE_EXPERIMENT = """#!/usr/bin/env bash
runs_file="$(dirname "${BASH_SOURCE[0]}")/runs.txt"
run=$(( $(grep -c args "$runs_file" 2>/dev/null || true) + 1 ))
echo "run $run args $* restart ${SLURM_RESTART_COUNT:-0}" >> "$runs_file"
if (( run > 1 )); then exit 0; fi
if [[ "$MODE" == pause ]]; then exit 3; fi
trap 'echo "run $run got TERM" >> "$runs_file"; exit 4' TERM
touch "$(dirname "${BASH_SOURCE[0]}")/ready"
while :; do sleep 0.2; done
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    local = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        local.start()
        yield local
    finally:
        local.stop()


def make_suite(root: Path) -> Path:
    scripts = root / "experiment_scripts"
    (scripts / "slurm").mkdir(parents=True)
    (root / "slurm_logs").mkdir()
    (scripts / f"{NAME}.sh").write_text(FAKE_EXPERIMENT)
    settings = slurm.from_table({"cpus_per_task": 1, "time": "10", "signal_seconds": 60})
    sbatch = slurm.sbatch_path(scripts, NAME)
    sbatch.write_text(slurm.render_sbatch(settings, NAME, f"experiment_scripts/{NAME}.sh"))
    return sbatch


def submit(cluster: LocalSlurm, root: Path, sbatch: Path, mode: str) -> str:
    cluster.env["MODE"] = mode
    out = cluster.run("sbatch", "--parsable", str(sbatch.relative_to(root)), cwd=root).stdout
    return out.strip().split(";")[0]


def finish_after_requeue(cluster: LocalSlurm, job: str, timeout: float = 120) -> dict[str, str]:

    def requeued(j: dict[str, str]) -> bool:
        if j.get("Restarts") == "0" and j.get("JobState") in ENDED:
            raise AssertionError(f"job {job} ended without a requeue: {j}")
        return j.get("Restarts") == "1" and j.get("JobState") == "PENDING"

    cluster.wait_for(job, requeued, timeout=timeout, what="requeued")
    cluster.start_now(job)
    return cluster.wait_for(
        job,
        lambda j: j.get("JobState") in ENDED,
        timeout=timeout,
        what="finished",
    )


def test_paused_job_requeues_itself_and_finishes(cluster: LocalSlurm, tmp_path: Path) -> None:
    sbatch = make_suite(tmp_path)
    job = submit(cluster, tmp_path, sbatch, "pause")
    info = finish_after_requeue(cluster, job)
    assert info["JobState"] == "COMPLETED", cluster.logs()
    runs = (tmp_path / "experiment_scripts" / "runs.txt").read_text().splitlines()
    assert runs == ["run 1 args cpu restart 0", "run 2 args cpu restart 1"]
    output = (tmp_path / "slurm_logs" / f"{NAME}-{job}.out").read_text()
    assert "exit 3 (3 paused, 4 checkpointed on a signal): requeued" in output
    assert "experiment finished" in output


def test_time_limit_signal_checkpoints_and_requeues(cluster: LocalSlurm, tmp_path: Path) -> None:
    sbatch = make_suite(tmp_path)
    job = submit(cluster, tmp_path, sbatch, "signal")
    cluster.wait_for(job, lambda j: j.get("JobState") == "RUNNING", what="running")
    ready = tmp_path / "experiment_scripts" / "ready"
    cluster.wait_for(job, lambda j: ready.exists(), what="ready")
    # What Slurm sends signal_seconds before the time limit (#SBATCH --signal=B:USR1@...).
    cluster.run("scancel", "--batch", "--signal=USR1", job)
    info = finish_after_requeue(cluster, job)
    assert info["JobState"] == "COMPLETED", cluster.logs()
    runs = (tmp_path / "experiment_scripts" / "runs.txt").read_text().splitlines()
    assert runs == ["run 1 args cpu restart 0", "run 1 got TERM", "run 2 args cpu restart 1"]
    output = (tmp_path / "slurm_logs" / f"{NAME}-{job}.out").read_text()
    assert "got SIGUSR1" in output and "requeued" in output


def test_submitted_tiny_experiment_pauses_requeues_and_finishes(
    cluster: LocalSlurm, tmp_path: Path
) -> None:
    """The whole chain on real Omniglot: generate → submit → train one epoch → pause
    (exit 3) → scontrol requeue → the same job resumes and finishes."""
    suite_text = TINY_SUITE.replace("epochs = 2\n", "epochs = 2\npause = 1\n", 1)
    assert "pause = 1" in suite_text  # total_epochs_before_pause (tests/suite_helpers.py)
    table = '\n[slurm]\ncpus_per_task = 1\ntime = "30"\nsignal_seconds = 60\n'
    suite = write_suite(tmp_path, suite_text + table)
    runs = tmp_path / "runs"
    metasuite = [sys.executable, "-m", "metasuite"]
    cluster.run(*metasuite, "generate", "--suite", str(suite))
    submit = [*metasuite, "submit", "--suite", str(suite), "--only", "maml_5way_1shot_s0"]
    submit += ["--experiments-root", str(runs)]
    out = cluster.run(*submit).stdout
    job = re.search(r"maml_5way_1shot_s0: submitted job (\d+)", out).group(1)
    info = finish_after_requeue(cluster, job, timeout=300)
    output = (tmp_path / "slurm_logs" / f"maml_5way_1shot_s0-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", output
    assert "exit 3 (3 paused, 4 checkpointed on a signal): requeued" in output
    state = json.loads((runs / "maml_5way_1shot_s0" / "state.json").read_text())
    assert state["status"] == "done" and state["epoch"] == 2, state
    # Submitting again skips it: the suite is finished.
    assert "maml_5way_1shot_s0: done, skipped" in cluster.run(*submit).stdout


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Two slurmd on this host (nodes n1, n2): Debian's slurmd runs several, each with
    its own name and port."""
    local = LocalSlurm(tmp_path_factory.mktemp("slurm2"), nodes=2)
    try:
        local.start()
        yield local
    finally:
        local.stop()


def test_two_node_job_trains_pauses_requeues_and_finishes(
    two_node_cluster: LocalSlurm, tmp_path: Path
) -> None:
    """``[slurm] nodes = 2`` on real Omniglot: srun starts one launcher per node, they meet
    in a c10d rendezvous (on 127.0.0.1: the node names do not resolve), train one epoch
    on 2 ranks, pause (exit 3 on both nodes, so srun's 3) → requeue → resume → done."""
    cluster = two_node_cluster
    suite_text = TINY_SUITE.replace("epochs = 2\n", "epochs = 2\npause = 1\n", 1)
    table = '\n[slurm]\nnodes = 2\ncpus_per_task = 1\ntime = "30"\nsignal_seconds = 60\n'
    suite = write_suite(tmp_path, suite_text + table)
    runs = tmp_path / "runs"
    cluster.env.update(METASUITE_RDZV_HOST="127.0.0.1", METASUITE_NUM_THREADS="1")
    metasuite = [sys.executable, "-m", "metasuite"]
    cluster.run(*metasuite, "generate", "--suite", str(suite))
    submit = [*metasuite, "submit", "--suite", str(suite), "--only", "maml_5way_1shot_s0"]
    submit += ["--experiments-root", str(runs)]
    out = cluster.run(*submit).stdout
    job = re.search(r"maml_5way_1shot_s0: submitted job (\d+)", out).group(1)
    info = finish_after_requeue(cluster, job, timeout=300)
    output = (tmp_path / "slurm_logs" / f"maml_5way_1shot_s0-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", output + cluster.logs()
    assert "srun --nodes=2 --ntasks=2 --ntasks-per-node=1 bash" in output
    assert "exit 3 (3 paused, 4 checkpointed on a signal): requeued" in output
    assert output.count("on 2 processes (cpu, gloo)") == 2, output  # both runs, 2 ranks
    state = json.loads((runs / "maml_5way_1shot_s0" / "state.json").read_text())
    assert state["status"] == "done" and state["epoch"] == 2, state
    assert state["world_size"] == 2
    manifest = json.loads((runs / "maml_5way_1shot_s0" / "manifest.json").read_text())
    assert len(manifest["runs"]) == 2  # rank 0 only: one entry per run of the job
