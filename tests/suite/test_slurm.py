"""The Slurm sbatch renderer: settings validation, golden file, shell syntax, and the
script's checkpoint-and-requeue logic run by bash with stand-ins for the experiment and
``scontrol`` (the real cluster test is tests/suite/test_slurm_cluster.py)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from metasuite.errors import ConfigError
from metasuite.suite import slurm

GOLDEN = Path(__file__).parent / "golden" / "slurm_example.sbatch"
NAME = "omniglot_maml++_5way_1shot_s0"
SCRIPT = f"experiment_scripts/{NAME}.sh"


def golden_settings() -> slurm.SlurmSettings:
    return slurm.from_table(
        {
            "partition": "gpu",
            "gres": "gpu:1",
            "cpus_per_task": 8,
            "mem": "32G",
            "time": "1-00:00:00",
            "account": "my lab's",
            "signal_seconds": 300,
            "extra_options": ["--mail-type=END"],
        },
        source="suite.toml",
    )


def test_rendered_sbatch_matches_golden_file() -> None:
    # To accept an intended change: render it and review the diff of the golden file.
    text = slurm.render_sbatch(golden_settings(), NAME, SCRIPT)
    assert text == GOLDEN.read_text(encoding="utf-8")


def sbatch_options(text: str) -> list[str]:
    """The option words sbatch reads from the #SBATCH lines (shell quoting rules)."""
    words: list[str] = []
    for line in text.splitlines():
        if line.startswith("#SBATCH "):
            words += shlex.split(line[len("#SBATCH ") :])
    return words


def test_values_are_shell_quoted_single_words() -> None:
    settings = slurm.from_table(
        {"partition": "a b'c$(touch x)", "account": "x;y", "time": "90"}, source="s.toml"
    )
    opts = sbatch_options(slurm.render_sbatch(settings, "we ird'name", "experiment_scripts/x.sh"))
    assert "--partition=a b'c$(touch x)" in opts
    assert "--account=x;y" in opts
    assert "--job-name=we ird'name" in opts
    assert "--time=90" in opts
    assert "--output=slurm_logs/we ird'name-%j.out" in opts


def test_gpu_and_requeue_switches_change_the_options() -> None:
    gpu = sbatch_options(slurm.render_sbatch(golden_settings(), NAME, SCRIPT))
    assert "--gres=gpu:1" in gpu and "--requeue" in gpu and "--signal=B:USR1@300" in gpu
    cpu = slurm.render_sbatch(slurm.from_table({"requeue": False}), NAME, SCRIPT)
    opts = sbatch_options(cpu)
    assert "--no-requeue" in opts
    assert not any(o.startswith(("--gres", "--signal", "--partition")) for o in opts)
    assert "--gpus-from-slurm" not in cpu and "--gpus-from-slurm" in slurm.render_sbatch(
        golden_settings(), NAME, SCRIPT
    )


def test_percent_in_name_is_escaped_in_output_pattern() -> None:
    opts = sbatch_options(slurm.render_sbatch(slurm.SlurmSettings(), "a%b", "x.sh"))
    assert "--output=slurm_logs/a%%b-%j.out" in opts


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"partiton": "gpu"}, "unknown key 'partiton' (did you mean 'partition'?)"),
        ({"time": "2 hours"}, "time must be an sbatch time limit"),
        ({"time": "0"}, "time must be an sbatch time limit"),
        ({"time": "5", "signal_seconds": 300}, "signal_seconds (300) must be shorter"),
        ({"partition": "gpu\n#SBATCH --x"}, "partition must be a non-empty single-line"),
        ({"partition": 3}, "partition must be a string"),
        ({"cpus_per_task": 0}, "cpus_per_task must be an integer >= 1"),
        ({"cpus_per_task": True}, "cpus_per_task must be an integer >= 1"),
        ({"requeue": "yes"}, "requeue must be true or false"),
        ({"mem": "lots"}, "mem must look like '16G'"),
        ({"gres": "gpu 2"}, "gres must look like 'gpu:1'"),
        ({"log_dir": "../logs"}, "log_dir must be a folder inside"),
        ({"log_dir": "/tmp/logs"}, "log_dir must be a folder inside"),
        ({"extra_options": ["-p gpu"]}, "is not an sbatch long option"),
        ({"extra_options": "--nice=1"}, "extra_options must be a list of strings"),
    ],
)
def test_bad_settings_name_file_key_and_expectation(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        slurm.from_table(table, source="exp/suite.toml")
    assert str(info.value).startswith("exp/suite.toml: [slurm]")
    assert message in str(info.value)


def test_time_limit_forms() -> None:
    assert slurm.parse_time_limit("90") == 90 * 60
    assert slurm.parse_time_limit("10:30") == 10 * 60 + 30
    assert slurm.parse_time_limit("4:00:00") == 4 * 3600
    assert slurm.parse_time_limit("2-12") == 2 * 86400 + 12 * 3600
    assert slurm.parse_time_limit("1-02:03") == 86400 + 2 * 3600 + 3 * 60
    assert slurm.parse_time_limit("1-02:03:04") == 86400 + 2 * 3600 + 3 * 60 + 4
    assert slurm.parse_time_limit("1:2:3:4") is None
    assert slurm.from_table({"gres": "gpu:a100:2,tmpfs:10"}).uses_gpus
    assert not slurm.from_table({"gres": "tmpfs:10"}).uses_gpus


@pytest.mark.parametrize(
    "table", [{}, {"requeue": False}, {"gres": "gpu:2", "partition": "x y"}, {"max_requeues": 0}]
)
def test_rendered_scripts_pass_bash_n_and_shellcheck(tmp_path: Path, table: dict) -> None:
    path = tmp_path / "x.sbatch"
    path.write_text(slurm.render_sbatch(slurm.from_table(table), NAME, SCRIPT))
    subprocess.run(["bash", "-n", str(path)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (bash -n passed)")
    result = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# ------------------------------------------------------ the script's logic, without Slurm

FAKE_EXPERIMENT = """#!/usr/bin/env bash
# Stand-in for experiment_scripts/<name>.sh: logs its arguments, then exits with the
# code in $FAKE_EXIT, or on SIGTERM with 4 (what metasuite train does).
echo "args: $*" >> "$FAKE_LOG"
if [[ -n "${FAKE_WAIT_FOR_TERM:-}" ]]; then
    trap 'echo "got TERM" >> "$FAKE_LOG"; exit 4' TERM
    touch "$FAKE_LOG.ready"
    while :; do sleep 0.1; done
fi
exit "$FAKE_EXIT"
"""

FAKE_SCONTROL = """#!/usr/bin/env bash
echo "scontrol $*" >> "$FAKE_LOG"
exit "${FAKE_SCONTROL_EXIT:-0}"
"""


def make_job(tmp_path: Path, table: dict) -> tuple[Path, Path, dict[str, str]]:
    root = tmp_path / "suite"
    (root / "experiment_scripts" / "slurm").mkdir(parents=True)
    (root / SCRIPT).write_text(FAKE_EXPERIMENT)
    sbatch = root / "experiment_scripts" / "slurm" / f"{NAME}.sbatch"
    sbatch.write_text(slurm.render_sbatch(slurm.from_table(table), NAME, SCRIPT))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    log = tmp_path / "log.txt"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_SUBMIT_DIR": str(root),
        "SLURM_JOB_ID": "77",
        "FAKE_LOG": str(log),
    }
    env.pop("SLURM_RESTART_COUNT", None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return sbatch, log, env


@pytest.mark.parametrize(
    ("code", "requeued", "job_exit"), [(0, False, 0), (3, True, 0), (4, True, 0), (1, False, 1)]
)
def test_exit_codes_decide_requeue(
    tmp_path: Path, code: int, requeued: bool, job_exit: int
) -> None:
    sbatch, log, env = make_job(tmp_path, {})
    env["FAKE_EXIT"] = str(code)
    result = subprocess.run(["bash", str(sbatch)], env=env, capture_output=True, text=True)
    lines = log.read_text().splitlines()
    assert lines[0] == "args: cpu"
    assert ("scontrol requeue 77" in lines) == requeued, result.stderr
    assert result.returncode == job_exit, result.stderr


def test_no_requeue_when_off_or_too_many_restarts_or_scontrol_fails(tmp_path: Path) -> None:
    for i, (table, extra_env) in enumerate(
        [
            ({"requeue": False}, {}),
            ({"max_requeues": 2}, {"SLURM_RESTART_COUNT": "2"}),
            ({}, {"FAKE_SCONTROL_EXIT": "1"}),
        ]
    ):
        sbatch, log, env = make_job(tmp_path / str(i), table)
        env.update(extra_env, FAKE_EXIT="3")
        result = subprocess.run(["bash", str(sbatch)], env=env, capture_output=True, text=True)
        assert result.returncode == 3, (table, result.stderr)
        wanted_scontrol = "FAKE_SCONTROL_EXIT" in extra_env
        assert ("scontrol requeue 77" in log.read_text()) == wanted_scontrol


def test_gpu_job_passes_slurm_gpus_as_device_ids(tmp_path: Path) -> None:
    sbatch, log, env = make_job(tmp_path, {"gres": "gpu:2"})
    env.update(FAKE_EXIT="0", CUDA_VISIBLE_DEVICES="2,5")
    assert subprocess.run(["bash", str(sbatch)], env=env, capture_output=True).returncode == 0
    assert log.read_text().splitlines()[0] == "args: 2 5"
    env["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run(["bash", str(sbatch)], env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "granted no GPU" in result.stderr


def test_missing_experiment_script_is_a_clear_error(tmp_path: Path) -> None:
    sbatch, _, env = make_job(tmp_path, {})
    env["SLURM_SUBMIT_DIR"] = str(tmp_path)
    result = subprocess.run(["bash", str(sbatch)], env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "submit from the suite's root folder" in result.stderr


def run_until_signalled(tmp_path: Path, sig: signal.Signals) -> tuple[int, list[str]]:
    sbatch, log, env = make_job(tmp_path, {})
    env.update(FAKE_WAIT_FOR_TERM="1", FAKE_EXIT="0")
    job = subprocess.Popen(["bash", str(sbatch)], env=env, stderr=subprocess.PIPE, text=True)
    ready = Path(f"{log}.ready")
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, "fake experiment did not start"
        time.sleep(0.05)
    job.send_signal(sig)
    _, stderr = job.communicate(timeout=30)
    assert f"got SIG{sig.name[3:]}" in stderr
    return job.returncode, log.read_text().splitlines()


def test_usr1_warning_checkpoints_then_requeues(tmp_path: Path) -> None:
    code, lines = run_until_signalled(tmp_path, signal.SIGUSR1)
    assert "got TERM" in lines  # forwarded to the experiment as SIGTERM
    assert "scontrol requeue 77" in lines
    assert code == 0


def test_sigterm_from_scancel_is_forwarded_but_never_requeues(tmp_path: Path) -> None:
    code, lines = run_until_signalled(tmp_path, signal.SIGTERM)
    assert "got TERM" in lines
    assert "scontrol requeue 77" not in lines
    assert code == 4


# ------------------------------------------------------------------ several nodes

MULTI_GOLDEN = Path(__file__).parent / "golden" / "slurm_multinode.sbatch"


def multinode_settings() -> slurm.SlurmSettings:
    return slurm.from_table(
        {
            "partition": "gpu",
            "nodes": 2,
            "gpus_per_node": 4,
            "cpus_per_task": 32,
            "mem": "128G",
            "time": "2-00:00:00",
            "signal_seconds": 600,
        },
        source="suite.toml",
    )


def test_rendered_multinode_sbatch_matches_golden_file() -> None:
    # To accept an intended change: render it and review the diff of the golden file.
    text = slurm.render_sbatch(multinode_settings(), NAME, SCRIPT)
    assert text == MULTI_GOLDEN.read_text(encoding="utf-8")


def test_multinode_options_one_task_per_node_and_gpus_per_node() -> None:
    opts = sbatch_options(slurm.render_sbatch(multinode_settings(), NAME, SCRIPT))
    assert "--nodes=2" in opts and "--ntasks-per-node=1" in opts
    assert "--gpus-per-node=4" in opts and "--ntasks=1" not in opts
    assert multinode_settings().uses_gpus
    single = sbatch_options(slurm.render_sbatch(golden_settings(), NAME, SCRIPT))
    assert "--nodes=1" in single and "--ntasks=1" in single


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"nodes": 0}, "[slurm] nodes must be an integer >= 1, got 0"),
        ({"nodes": "2"}, "[slurm] nodes must be an integer >= 1, got '2'"),
        ({"gpus_per_node": 0}, "[slurm] gpus_per_node must be an integer >= 1, got 0"),
        ({"gpus_per_node": 2, "gres": "gpu:2"}, "gpus_per_node (2) and a gpu gres"),
    ],
)
def test_bad_node_settings_are_named(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        slurm.from_table(table, source="suite.toml")


# Stand-in for srun inside the allocation: runs the command once per task (node), with
# $SLURM_NODEID, passes SIGTERM on to every task and returns the highest exit status,
# as srun does.
FAKE_SRUN = r"""#!/usr/bin/env bash
echo "srun $*" >> "$FAKE_LOG"
n=1; cmd=()
for a in "$@"; do
    case $a in --ntasks=*) n=${a#--ntasks=};; --*) ;; *) cmd+=("$a");; esac
done
pids=()
for ((i = 0; i < n; i++)); do SLURM_NODEID=$i "${cmd[@]}" & pids+=($!); done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
worst=0
for p in "${pids[@]}"; do
    while :; do wait "$p"; rc=$?; kill -0 "$p" 2>/dev/null || break; done
    (( rc > worst )) && worst=$rc
done
exit $worst
"""


def make_multinode_job(tmp_path: Path, table: dict) -> tuple[Path, Path, dict[str, str]]:
    sbatch, log, env = make_job(tmp_path, {"nodes": 2, **table})
    srun = tmp_path / "bin" / "srun"
    srun.write_text(FAKE_SRUN)
    srun.chmod(0o755)
    return sbatch, log, env


@pytest.mark.parametrize(("code", "requeued"), [(0, False), (3, True), (1, False)])
def test_multinode_job_runs_the_script_once_per_node_under_srun(
    tmp_path: Path, code: int, requeued: bool
) -> None:
    sbatch, log, env = make_multinode_job(tmp_path, {})
    env["FAKE_EXIT"] = str(code)
    result = subprocess.run(["bash", str(sbatch)], env=env, capture_output=True, text=True)
    lines = log.read_text().splitlines()
    assert lines[0].startswith("srun --nodes=2 --ntasks=2 --ntasks-per-node=1 bash ")
    assert lines.count("args: cpu") == 2, lines
    assert ("scontrol requeue 77" in lines) == requeued, result.stderr
    assert result.returncode == (1 if code == 1 else 0), result.stderr


def test_multinode_usr1_stops_every_node_then_requeues_the_job(tmp_path: Path) -> None:
    sbatch, log, env = make_multinode_job(tmp_path, {})
    env.update(FAKE_WAIT_FOR_TERM="1", FAKE_EXIT="0")
    job = subprocess.Popen(["bash", str(sbatch)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while log.read_text().count("args: cpu") < 2 if log.exists() else True:
        assert time.monotonic() < deadline, "fake tasks did not start"
        time.sleep(0.05)
    time.sleep(0.3)  # both traps installed
    job.send_signal(signal.SIGUSR1)
    _, stderr = job.communicate(timeout=30)
    lines = log.read_text().splitlines()
    assert lines.count("got TERM") == 2, (lines, stderr)
    assert "scontrol requeue 77" in lines
    assert job.returncode == 0, stderr
