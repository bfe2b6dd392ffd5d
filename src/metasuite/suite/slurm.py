"""Slurm batch scripts for a suite: one ``experiment_scripts/slurm/<name>.sbatch`` each.

A cluster's time limit is shorter than a 100-epoch run, so every job must be able to stop
and come back. The contract (submitit's, kept deliberately small) is carried out by the
launcher, :func:`metasuite.training.launch.slurm_job`, which the sbatch body ``exec``s so
that it is the batch shell Slurm signals:

- ``#SBATCH --signal=B:USR1@<signal_seconds>``: Slurm warns the batch shell before the
  time limit; the launcher forwards SIGTERM to the experiment script, the builder
  finishes its meta-iteration, checkpoints and exits 4.
- Exit 3 (paused by ``total_epochs_before_pause``) or 4 (stopped by a signal), i.e.
  :data:`metasuite.errors.RESUMABLE_EXIT_CODES` → ``scontrol requeue $SLURM_JOB_ID``: the
  same job id runs again later and resumes from the checkpoint. Exit 0 is done; anything
  else fails the job (a config error must not loop forever). A SIGTERM sent to the batch
  shell by ``scancel`` is forwarded too but never requeues: the user asked the job to go.
- The job runs the experiment's own ``experiment_scripts/<name>.sh`` with the GPU ids
  Slurm granted (``CUDA_VISIBLE_DEVICES``) or ``cpu``, so launching (one process or
  torchrun) lives in one place.

Settings (the ``[slurm]`` table) are parsed and validated in
:mod:`metasuite.suite.slurm_settings`, re-exported here. Every value reaches the script
shell-quoted (sbatch parses ``#SBATCH`` lines with shell quoting rules).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from metasuite.errors import RESUMABLE_EXIT_CODES, ExitCode
from metasuite.suite.render import (
    PACKAGE_TEMPLATES,
    OutputFile,
    make_environment,
    relative_posix,
    render_file,
)
from metasuite.suite.slurm_settings import SLURM_KEYS, SlurmSettings, from_table, parse_time_limit
from metasuite.suite.sweep import Experiment, Suite

SBATCH_TEMPLATE = "slurm.sbatch.j2"
"""Template name; a file of this name beside the suite file overrides the packaged one."""
SLURM_SUBDIR = "slurm"
"""sbatch files go in this sub-folder of the suite's script folder."""


def sbatch_path(script_dir: Path, name: str) -> Path:
    """``<script_dir>/slurm/<name>.sbatch``: beside the experiment scripts it runs."""
    return Path(script_dir) / SLURM_SUBDIR / f"{name}.sbatch"


def template_variables(
    settings: SlurmSettings, name: str, experiment_script: str
) -> dict[str, Any]:
    """What the sbatch template sees; kept apart so a suite's own template can use it.

    ``experiment_script`` is the experiment's ``.sh`` relative to the suite's output
    root (the folder jobs are submitted from), in POSIX form.
    """
    return {
        "name": name,
        "slurm": settings,
        "uses_gpus": settings.uses_gpus,
        "experiment_script": experiment_script,
        # sbatch expands %-patterns in file names; a literal % in a name is written %%.
        "output": f"{Path(settings.log_dir).as_posix()}/{name.replace('%', '%%')}-%j.out",
        "requeue_exit_codes": [int(c) for c in RESUMABLE_EXIT_CODES],
        "exit": {code.name: int(code) for code in ExitCode},
    }


def render_sbatch(
    settings: SlurmSettings,
    name: str,
    experiment_script: str,
    env: jinja2.Environment | None = None,
) -> str:
    """The sbatch script of experiment ``name``.

    ``env`` is the suite's Jinja environment (so a ``slurm.sbatch.j2`` beside the suite
    file overrides the packaged template); by default the packaged template is used.
    """
    if env is None:
        env = make_environment([PACKAGE_TEMPLATES])
    variables = template_variables(settings, name, experiment_script)
    return render_file(env, SBATCH_TEMPLATE, variables, what=f"sbatch of {name}")


def sbatch_file(suite: Suite, exp: Experiment, env: jinja2.Environment | None = None) -> OutputFile:
    """The generated sbatch file of one experiment of a suite with a ``[slurm]`` table."""
    if suite.slurm is None:
        raise ValueError(f"{suite.path} has no [slurm] table")
    script = relative_posix(exp.script_path, suite.root)
    text = render_sbatch(suite.slurm, exp.name, script, env or suite.environment())
    return OutputFile(sbatch_path(suite.script_dir, exp.name), text.encode(), executable=True)


__all__ = [
    "SLURM_KEYS",
    "SlurmSettings",
    "from_table",
    "parse_time_limit",
    "render_sbatch",
    "sbatch_file",
    "sbatch_path",
    "template_variables",
]
