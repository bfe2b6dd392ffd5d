"""The files a suite produces: one config and one script per experiment.

Shared by ``metasuite generate`` (which writes or checks them) and ``metasuite run-suite``
(which refuses to run scripts that are out of date). Paths inside the scripts are
relative to the script's own folder, so the committed files are the same bytes on every
machine and the scripts work from any current directory. Another kind of output (e.g.
Slurm ``.sbatch`` files) is one more renderer here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import jinja2

from metasuite.config import to_json
from metasuite.errors import ExitCode, UserError
from metasuite.suite.render import OutputFile, relative_posix, render_file
from metasuite.suite.slurm import sbatch_file
from metasuite.suite.sweep import Experiment, Suite
from metasuite.training.experiment_dir import EXPERIMENTS_ROOT_ENV


def config_file(exp: Experiment) -> OutputFile:
    """The validated config in field order, every key present (what humans diff)."""
    return OutputFile(exp.config_path, to_json(exp.config).encode("utf-8"))


def script_file(suite: Suite, exp: Experiment, env: jinja2.Environment | None = None) -> OutputFile:
    """The experiment's shell script, rendered from the suite's script template."""
    env = env or suite.environment()
    context = {
        **suite.constants,
        **exp.values,
        "experiment_name": exp.name,
        "name": exp.name,
        "values": dict(exp.values),
        "config": exp.config,
        "config_relpath": relative_posix(exp.config_path, exp.script_path.parent),
        "root_relpath": relative_posix(suite.root, exp.script_path.parent),
        "config_in_root": relative_posix(exp.config_path, suite.root),
        "script_relpath": relative_posix(exp.script_path, suite.root),
        "exit": {code.name: int(code) for code in ExitCode},
        # Relative (the same bytes in every checkout) when the suite file is inside the
        # root or beside it (methods.toml's root is the sibling folder methods/).
        "suite_relpath": relative_posix(suite.path, suite.root)
        if suite.root in suite.path.parents or suite.root.parent in suite.path.parents
        else suite.path.as_posix(),
    }
    text = render_file(env, suite.script_template, context, f"script of {exp.name}")
    return OutputFile(exp.script_path, text.encode("utf-8"), executable=True)


def suite_files(suite: Suite, experiments: Sequence[Experiment]) -> list[OutputFile]:
    """Every generated file: configs, scripts, then sbatch files when the suite has [slurm]."""
    env = suite.environment()
    files = [config_file(e) for e in experiments]
    files += [script_file(suite, e, env) for e in experiments]
    if suite.slurm is not None:
        files += [sbatch_file(suite, e, env) for e in experiments]
    return files


def extra_files(suite: Suite, files: Sequence[OutputFile]) -> list[Path]:
    """Files the grid does not produce in the generator's folders: every ``*.json`` of
    the config folder, ``*.sh`` of the script folder and ``slurm/*.sbatch``, judged by
    name only (those folders belong to the generator; ``--clean`` deletes these)."""
    produced = {f.path for f in files}
    found: set[Path] = set()
    kinds = [(suite.config_dir, "*.json"), (suite.script_dir, "*.sh")]
    kinds.append((suite.script_dir / "slurm", "*.sbatch"))
    for folder, pattern in kinds:
        if folder.is_dir():
            found.update(p for p in folder.glob(pattern) if p.is_file())
    return sorted(found - produced)


def refuse_outdated(files: Iterable[OutputFile]) -> None:
    """A :class:`UserError` when any of ``files`` is stale or missing: running or
    submitting it would not run what the suite says."""
    outdated = [f.path for f in files if f.status() != "unchanged"]
    if outdated:
        shown = ", ".join(str(p) for p in outdated[:3])
        more = f" and {len(outdated) - 3} more" if len(outdated) > 3 else ""
        raise UserError(
            f"{len(outdated)} generated files are stale or missing ({shown}{more}); "
            "run: metasuite generate"
        )


JOB_VARIABLES: tuple[str, ...] = (EXPERIMENTS_ROOT_ENV, "PYTHON")
"""The variables :func:`job_environment` sets for the jobs (a dry run shows them)."""


def job_environment(experiments_root: Path) -> dict[str, str]:
    """The environment for the experiment scripts that run-suite and submit start.

    The scripts read ``$METASUITE_EXPERIMENTS_ROOT`` (where results go) and ``$PYTHON``
    (which interpreter runs ``metasuite train``): the jobs must write where this command
    was told and run the metasuite it runs under.
    """
    env = dict(os.environ)
    env[EXPERIMENTS_ROOT_ENV] = str(experiments_root)
    env.setdefault("PYTHON", sys.executable)
    return env
