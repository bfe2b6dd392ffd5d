"""The files a suite produces: one config and one script per experiment.

Shared by ``metasuite generate`` (which writes or checks them) and ``metasuite run-suite``
(which refuses to run scripts that are out of date). Paths inside the scripts are
relative to the script's own folder, so the committed files are the same bytes on every
machine and the scripts work from any current directory. Another kind of output (e.g.
Slurm ``.sbatch`` files) is one more renderer here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import jinja2

from metasuite.config import to_json
from metasuite.render import OutputFile, render_file
from metasuite.sweep import Experiment, Suite


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


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
        "config_relpath": _rel(exp.config_path, exp.script_path.parent),
        "root_relpath": _rel(suite.root, exp.script_path.parent),
        "config_in_root": _rel(exp.config_path, suite.root),
        "script_relpath": _rel(exp.script_path, suite.root),
        "suite_relpath": _rel(suite.path, suite.root)
        if suite.root in suite.path.parents
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
        from metasuite.slurm import sbatch_file

        files += [sbatch_file(suite, e, env) for e in experiments]
    return files


def extra_files(suite: Suite, files: Sequence[OutputFile]) -> list[Path]:
    """Files in the output folders that look generated but the grid no longer produces."""
    produced = {f.path for f in files}
    found: set[Path] = set()
    kinds = [(suite.config_dir, "*.json"), (suite.script_dir, "*.sh")]
    kinds.append((suite.script_dir / "slurm", "*.sbatch"))
    for folder, pattern in kinds:
        if folder.is_dir():
            found.update(p for p in folder.glob(pattern) if p.is_file())
    return sorted(found - produced)
