"""The ``[slurm]`` table of a suite file, validated: resources and requeue policy.

Kept apart from sbatch rendering (:mod:`metasuite.suite.slurm`) so that the suite parser
(:mod:`metasuite.suite.sweep`) can read the table while the renderer imports the suite's
types: imports run one way. Errors name the file and key. Values are single-line text
(sbatch reads ``#SBATCH`` lines with shell quoting rules; the renderer quotes them), so a
value can never end a line and inject a command.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from metasuite.errors import ConfigError


@dataclass(frozen=True)
class SlurmSettings:
    """The ``[slurm]`` table of a suite file: resources and requeue policy of every job.

    ``None`` leaves an option out so the cluster's default applies.
    """

    partition: str | None = None
    gres: str | None = None
    """E.g. ``"gpu:1"`` or ``"gpu:a100:2"``; a gpu gres makes the job run on the GPUs
    Slurm grants, otherwise it runs on the CPU."""
    cpus_per_task: int = 4
    nodes: int = 1
    """Nodes of each job; more than one runs one ``metasuite train`` launcher per node
    (``srun``, one task per node), meeting in a c10d rendezvous on the first node."""
    gpus_per_node: int | None = None
    """GPUs on each node (``#SBATCH --gpus-per-node``): one data-parallel process each;
    instead of a gpu ``gres``."""
    mem: str | None = None
    """Memory per node, sbatch syntax: ``"16G"``, ``"16000M"``."""
    time: str = "24:00:00"
    """Time limit, sbatch syntax: ``minutes``, ``[hours:]minutes:seconds``,
    ``days-hours[:minutes[:seconds]]``."""
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    requeue: bool = True
    """Requeue after a pause (exit 3) or a time-limit checkpoint (exit 4)."""
    signal_seconds: int = 120
    """How long before the time limit the job is told to checkpoint."""
    max_requeues: int = 1000
    """Stop requeueing after this many restarts (a guard against a job that never ends)."""
    log_dir: str = "slurm_logs"
    """Job output folder, relative to the suite's output root (``metasuite submit``
    creates it; sbatch does not)."""
    extra_options: tuple[str, ...] = ()
    """Further ``--option=value`` words, each written as its own ``#SBATCH`` line."""

    @property
    def uses_gpus(self) -> bool:
        return self.gpus_per_node is not None or self._gres_has_gpu

    @property
    def _gres_has_gpu(self) -> bool:
        return self.gres is not None and any(
            part.split(":", 1)[0] == "gpu" for part in self.gres.split(",")
        )


SLURM_KEYS: tuple[str, ...] = tuple(f.name for f in fields(SlurmSettings))
_OPTIONAL_STR = ("partition", "gres", "mem", "account", "qos", "constraint")
_INT_MIN = {
    "cpus_per_task": 1,
    "nodes": 1,
    "gpus_per_node": 1,
    "signal_seconds": 1,
    "max_requeues": 0,
}

_TIME_FORMS = (
    (re.compile(r"^(\d+)$"), ("m",)),
    (re.compile(r"^(\d+):(\d+)$"), ("m", "s")),
    (re.compile(r"^(\d+):(\d+):(\d+)$"), ("h", "m", "s")),
    (re.compile(r"^(\d+)-(\d+)$"), ("d", "h")),
    (re.compile(r"^(\d+)-(\d+):(\d+)$"), ("d", "h", "m")),
    (re.compile(r"^(\d+)-(\d+):(\d+):(\d+)$"), ("d", "h", "m", "s")),
)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_MEM = re.compile(r"^\d+[KMGT]?$")
_GRES_PART = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*$")
_OPTION = re.compile(r"^--[a-z][a-z0-9-]*(=.+)?$")


def parse_time_limit(text: str) -> int | None:
    """Seconds of an sbatch ``--time`` value, or None when it is not one."""
    for pattern, units in _TIME_FORMS:
        match = pattern.match(text)
        if match:
            return sum(
                int(v) * _UNIT_SECONDS[u] for v, u in zip(match.groups(), units, strict=True)
            )
    return None


def _check_text(value: str, where: str) -> None:
    if not value or any(ch in value for ch in "\n\r\0"):
        raise ConfigError(f"{where} must be a non-empty single-line string, got {value!r}")


def from_table(table: Mapping[str, Any] | None, source: str = "suite.toml") -> SlurmSettings:
    """Validate the ``[slurm]`` table (``None``: all defaults).

    ``source`` names the file in errors, e.g. ``"experiment_template_config/suite.toml"``.
    """
    if table is None:
        return SlurmSettings()
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [slurm] must be a table, got {type(table).__name__}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{source}: [slurm] {key}"
        if key not in SLURM_KEYS:
            close = difflib.get_close_matches(key, SLURM_KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(SLURM_KEYS)
            raise ConfigError(f"{source}: [slurm] unknown key {key!r}{hint}; known keys: {known}")
        if key in _OPTIONAL_STR or key in ("time", "log_dir"):
            if not isinstance(value, str):
                raise ConfigError(f"{where} must be a string, got {value!r}")
            _check_text(value, where)
        elif key in _INT_MIN:
            if type(value) is not int or value < _INT_MIN[key]:
                raise ConfigError(f"{where} must be an integer >= {_INT_MIN[key]}, got {value!r}")
        elif key == "requeue":
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, got {value!r}")
        elif key == "extra_options":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where} must be a list of strings, got {value!r}")
            for option in value:
                _check_text(option, where)
                if not _OPTION.match(option):
                    raise ConfigError(
                        f"{where}: {option!r} is not an sbatch long option like '--nice=10'"
                    )
            value = tuple(value)
        values[key] = value
    settings = SlurmSettings(**values)
    _check_consistency(settings, source)
    return settings


def _check_consistency(s: SlurmSettings, source: str) -> None:
    seconds = parse_time_limit(s.time)
    if seconds is None or seconds <= 0:
        raise ConfigError(
            f"{source}: [slurm] time must be an sbatch time limit such as '90', '4:00:00' or "
            f"'1-12:00:00', got {s.time!r}"
        )
    if s.requeue and s.signal_seconds >= seconds:
        raise ConfigError(
            f"{source}: [slurm] signal_seconds ({s.signal_seconds}) must be shorter than the "
            f"time limit {s.time!r} ({seconds} s), or the job is told to stop as it starts"
        )
    if s.mem is not None and not _MEM.match(s.mem):
        raise ConfigError(f"{source}: [slurm] mem must look like '16G' or '16000M', got {s.mem!r}")
    if s.gres is not None and not all(_GRES_PART.match(p) for p in s.gres.split(",")):
        raise ConfigError(
            f"{source}: [slurm] gres must look like 'gpu:1' or 'gpu:a100:2', got {s.gres!r}"
        )
    if s.gpus_per_node is not None and s._gres_has_gpu:
        raise ConfigError(
            f"{source}: [slurm] gpus_per_node ({s.gpus_per_node}) and a gpu gres "
            f"({s.gres!r}) both ask for GPUs; give one of them"
        )
    log_dir = Path(s.log_dir)
    if log_dir.is_absolute() or ".." in log_dir.parts:
        raise ConfigError(
            f"{source}: [slurm] log_dir must be a folder inside the suite's output root "
            f"(relative, no '..'), got {s.log_dir!r}"
        )


__all__ = ["SLURM_KEYS", "SlurmSettings", "from_table", "parse_time_limit"]
