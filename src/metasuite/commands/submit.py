"""``metasuite submit``: hand every experiment of a suite to Slurm with ``sbatch``.

Submits the generated ``experiment_scripts/slurm/<name>.sbatch`` files (the suite needs
a ``[slurm]`` table; see :mod:`metasuite.suite.slurm`) from the suite's root folder, which is
where the jobs look for their experiment scripts. It refuses out-of-date generated files
(the job would not run what the suite says), skips experiments that are done or whose
job is already in the queue, and passes ``PYTHON`` (this interpreter) and the
experiments root to the jobs through the environment, as ``run-suite`` does.
``--dry-run`` prints the commands and needs no Slurm.
"""

from __future__ import annotations

import argparse
import getpass
import shlex
import shutil
import subprocess

from metasuite.commands import _options
from metasuite.errors import UserError

HELP = "submit the suite's experiments to Slurm (sbatch), skipping done and queued ones"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _options.add_suite(parser)
    _options.add_experiments_root(parser, note="; passed on to the jobs")
    _options.add_only(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the sbatch commands, submit nothing"
    )
    parser.add_argument(
        "--resubmit-done",
        action="store_true",
        help="submit experiments whose state.json says done as well (they only re-test)",
    )


def _queued_job_names(env: dict[str, str]) -> set[str] | None:
    """Names of this user's pending or running jobs; None when squeue cannot tell."""
    squeue = shutil.which("squeue", path=env.get("PATH"))
    if squeue is None:
        return None
    try:
        result = subprocess.run(
            [squeue, "--noheader", "--user", getpass.getuser(), "--format=%j"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return {line.strip() for line in result.stdout.splitlines() if line.strip()}


def run(args: argparse.Namespace) -> int:
    from metasuite.suite.files import (
        JOB_VARIABLES,
        config_file,
        job_environment,
        refuse_outdated,
        script_file,
    )
    from metasuite.suite.render import relative_posix
    from metasuite.suite.slurm import sbatch_file
    from metasuite.training.experiment_dir import ExperimentDir

    suite, experiments = _options.selected_experiments(args)
    if suite.slurm is None:
        raise UserError(
            f"{suite.path}: no [slurm] table, so no sbatch files; add one (partition, gres, "
            "time, ...; see metasuite.suite.slurm) and run: metasuite generate"
        )
    jinja = suite.environment()
    sbatch_files = {e.name: sbatch_file(suite, e, jinja) for e in experiments}
    refuse_outdated(
        f
        for e in experiments
        for f in (config_file(e), script_file(suite, e, jinja), sbatch_files[e.name])
    )

    root = _options.experiments_root_of(args)
    env = job_environment(root)
    sbatch = shutil.which("sbatch", path=env.get("PATH"))
    if sbatch is None and not args.dry_run:
        raise UserError(
            "sbatch not found on PATH: submit runs on a Slurm login node "
            "(--dry-run prints the commands without Slurm)"
        )
    queued = None if args.dry_run else _queued_job_names(env)

    submitted = skipped = failed = 0
    # What the job gets from this command's environment (sbatch exports it), shown so the
    # printed command does what submit would do, results root included.
    passed = {name: env[name] for name in JOB_VARIABLES if name in env}
    prefix = f"cd {shlex.quote(str(suite.root))} && " + "".join(
        f"{name}={shlex.quote(value)} " for name, value in passed.items()
    )
    for exp in experiments:
        state = ExperimentDir.for_config(root, exp.config).read_state() or {}
        if state.get("status") == "done" and not args.resubmit_done:
            print(f"{exp.name}: done, skipped (--resubmit-done to submit it anyway)")
            skipped += 1
            continue
        if queued is not None and exp.name in queued:
            print(f"{exp.name}: a job of this name is already queued or running, skipped")
            skipped += 1
            continue
        rel = relative_posix(sbatch_files[exp.name].path, suite.root)
        command = [sbatch or "sbatch", "--parsable", rel]
        if args.dry_run:
            print(prefix + shlex.join(["sbatch", "--parsable", rel]))
            continue
        (suite.root / suite.slurm.log_dir).mkdir(parents=True, exist_ok=True)
        result = subprocess.run(command, cwd=suite.root, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().replace("\n", " ")
            print(f"{exp.name}: sbatch failed (exit {result.returncode}): {message}")
            failed += 1
            continue
        job_id = result.stdout.strip().split(";")[0]
        print(f"{exp.name}: submitted job {job_id}")
        submitted += 1
    if not args.dry_run:
        print(f"{submitted} submitted, {skipped} skipped, {failed} failed")
    return 1 if failed else 0
