"""``manifest.json``: what produced an experiment's results, run by run.

Months later a reader must be able to tell exactly which code, software, hardware,
configuration and data produced a number, and run it again. Every start or resume of
an experiment appends one *run* to ``<experiment>/manifest.json``::

    {"format": 1, "experiment_name": "...", "runs": [{...}, {...}]}

Each run records the metasuite version and git commit (dirty flag and a hash of the
uncommitted changes), Python/torch/numpy/CUDA/cuDNN versions, device names, the exact
command line and GPU ids, host, start and end times, the config's canonical hash, the
dataset archive's sha256 and class-split hash, and the seeds. The end time and final
status are filled in by :func:`finish_run` (done, paused, failed, interrupted); a run
that never got one was killed, and the next :func:`start_run` marks it so.

Resuming with a different torch/CUDA/cuDNN version or different data is allowed (the
researcher may have no choice) but it is warned about loudly and recorded in the run,
because bit-exact continuation is then no longer guaranteed. The file is always
replaced atomically, so a kill mid-write leaves the previous record intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from metasuite import __version__, jsontext
from metasuite.config import REPO_ROOT, ExperimentConfig, config_hash, resolve_dataset_path
from metasuite.fsutil import write_text_atomic
from metasuite.training.experiment_dir import ExperimentDir, utc_now

MANIFEST_FILE = "manifest.json"
FORMAT = 1
FINAL_STATUSES = ("done", "paused", "failed", "interrupted", "pruned")
GIT_TIMEOUT_S = 30
UNTRACKED_HASH_LIMIT = 10 << 20
"""Untracked files up to this size are hashed into the diff hash; bigger ones by size."""

log = logging.getLogger("metasuite.training.manifest")


class ReproducibilityWarning(UserWarning):
    """A resumed run differs from the previous run in software or data."""


# ------------------------------------------------------------------ git


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )


def git_info(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit, dirty flag and a sha256 of the uncommitted changes of ``repo``.

    The diff hash covers ``git diff HEAD`` and the untracked, non-ignored files (their
    content up to :data:`UNTRACKED_HASH_LIMIT`, else their size), so two runs with the
    same commit and hash ran the same code. Never raises: without git, or outside a
    checkout (an installed wheel), the reason is recorded instead.
    """
    info: dict[str, Any] = {
        "commit": None,
        "dirty": None,
        "diff_sha256": None,
        "untracked_files": [],
        "error": None,
    }
    try:
        top = _git(repo, "rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.decode().strip()).resolve() != repo.resolve():
            info["error"] = f"not a git checkout: {repo}"
            return info
        head = _git(repo, "rev-parse", "HEAD")
        if head.returncode != 0:
            info["error"] = "git checkout without commits"
            return info
        info["commit"] = head.stdout.decode().strip()
        diff = _git(repo, "diff", "HEAD", "--binary", "--no-ext-diff", "--no-textconv")
        untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "-z")
    except FileNotFoundError:
        info["error"] = "git is not installed"
        return info
    except subprocess.TimeoutExpired:
        info["error"] = f"git did not answer within {GIT_TIMEOUT_S} s"
        return info
    names = sorted(n for n in untracked.stdout.decode(errors="replace").split("\0") if n)
    info["untracked_files"] = names
    info["dirty"] = bool(diff.stdout) or bool(names)
    if info["dirty"]:
        digest = hashlib.sha256(diff.stdout)
        for name in names:
            path = repo / name
            try:
                size = path.stat().st_size
                digest.update(f"\0untracked\0{name}\0{size}\0".encode())
                if size <= UNTRACKED_HASH_LIMIT:
                    digest.update(path.read_bytes())
            except OSError:
                digest.update(f"\0unreadable\0{name}\0".encode())
        info["diff_sha256"] = digest.hexdigest()
    return info


# ------------------------------------------------------------------ software, devices


def software_versions() -> dict[str, Any]:
    """Python, torch, numpy, CUDA and cuDNN versions (None where not built in)."""
    import numpy
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_names(devices: Sequence[Any]) -> list[dict[str, str]]:
    """``[{"device": "cuda:0", "name": "NVIDIA H100 80GB HBM3"}, ...]``."""
    import torch

    out = []
    for device in devices:
        dev = torch.device(device)
        if dev.type == "cuda":
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            name = torch.cuda.get_device_name(index)
            dev = torch.device("cuda", index)
        elif dev.type == "cpu":
            name = _cpu_name()
        else:
            name = dev.type
        out.append({"device": str(dev), "name": name})
    return out


# ------------------------------------------------------------------ dataset


@dataclass(frozen=True)
class DatasetInfo:
    """Which data a run used: the archive's bytes and the class split drawn from it."""

    name: str
    path: str | None = None
    archive: str | None = None
    archive_sha256: str | None = None
    split_hash: str | None = None
    note: str = ""
    text: dict[str, Any] | None = None
    """Text experiments only: layout, task unit, tokenizer (source, sha256, vocab size)
    and, for an "hf" backbone, its attention implementation (written only when set)."""


def dataset_info(config: ExperimentConfig, tasks: Any = None) -> DatasetInfo:
    """Hashes of the data a run uses.

    ``tasks`` (a ``data.tasks.FewShotTasks``) tells where the data came from
    (``tasks.source``: folder and archive) and the class split (``tasks.split_hash``);
    without it the archive is the one the data loader would unpack
    (:func:`metasuite.data.folders.find_archive`) and there is no split hash. The archive
    is hashed here, on every start, so a replaced archive is noticed.
    """
    from metasuite.data.archive import archive_sha256
    from metasuite.data.folders import find_archive

    source = getattr(tasks, "source", None)
    folder = Path(source.folder) if source is not None else resolve_dataset_path(config)
    if source is not None:
        archive = Path(source.archive) if source.archive is not None else None
    else:
        archive = find_archive(config)
    notes = []
    split = getattr(tasks, "split_hash", None)
    if split is None:
        notes.append("class-split hash not available (no task samplers given)")
    if archive is None:
        notes.append(f"no archive found for {folder}; data used as unpacked")
    text = getattr(tasks, "text_record", None)
    if text is not None and config.backbone == "hf":
        from metasuite.learner.backbones.text import ATTENTION

        text = {**text, "attention": ATTENTION}
    return DatasetInfo(
        text=text,
        name=config.dataset_name,
        path=str(folder),
        archive=None if archive is None else str(archive),
        archive_sha256=None if archive is None else archive_sha256(archive),
        split_hash=split,
        note="; ".join(notes),
    )


def class_split_change(exp_dir: Path, tasks: Any) -> str | None:
    """``"class-split hash X -> Y"`` when the data's class split (``tasks.split_hash``)
    differs from the one the manifest's last run recorded; None when equal or unknown.
    An unknown data set has no archive to be checked against, so what it held when the
    run began (the manifest) is what a resume must find again."""
    current = getattr(tasks, "split_hash", None)
    try:
        manifest = read_manifest(Path(exp_dir))
    except ValueError:
        return None
    if not current or manifest is None:
        return None
    for run in reversed(manifest["runs"]):
        recorded = (run.get("dataset") or {}).get("split_hash")
        if recorded:
            return None if recorded == current else f"class-split hash: {recorded} -> {current}"
    return None


# ------------------------------------------------------------------ the manifest


_O = TypeVar("_O")


@dataclass
class RunRecord:
    """The run just started; :meth:`finish` fills in its end."""

    exp_dir: Path
    index: int
    entry: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def finish(self, status: str, message: str = "") -> bool:
        return finish_run(self.exp_dir, status, message=message, run=self.index)

    def ended_with(self, outcome: _O) -> _O:
        """Record a builder ``Outcome`` (DONE/PAUSED/INTERRUPTED) with the message the
        builder left in state.json, and pass the outcome on."""
        status = getattr(outcome, "name", str(outcome)).lower()
        state = ExperimentDir(self.exp_dir).read_state() or {}
        self.finish(status, str(state.get("message") or ""))
        return outcome


def manifest_path(exp_dir: Path) -> Path:
    return Path(exp_dir) / MANIFEST_FILE


_RUN_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "git": (dict,), "software": (dict,), "command": (dict,), "dataset": (dict,),
    "seeds": (dict,), "resumed_from": (dict,), "devices": (list,), "warnings": (list,),
    "notes": (list,), "changes_since_previous_run": (list,), "execution_changes": (list,),
    "run": (int,), "world_size": (int,), "pid": (int,),
    "started": (str,), "ended": (str,), "status": (str,), "message": (str,),
    "host": (str,), "config_hash": (str,), "meta_learner": (str,), "numerics": (dict,),
    "forced_differences": (list,),
}  # fmt: skip
"""What each run's fields must be (None, or absent, is always allowed): a manifest edited
by hand or written by something else is refused on reading, in one place, instead of
crashing whichever reader (``show``, ``status``, a resume) touches the field first."""
_RUN_ITEM_TYPES: dict[str, type] = {"devices": dict}
_COMMAND_FIELD_TYPES: dict[str, tuple[type, ...]] = {"argv": (list,), "gpu_ids": (list,)}


def _check_run_fields(runs: list[dict[str, Any]], path: Path) -> None:
    """ValueError naming the run and field whose type is not the manifest's."""
    for i, entry in enumerate(runs, 1):
        for key, types in _RUN_FIELD_TYPES.items():
            value = entry.get(key)
            if value is not None and (
                not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
            ):
                raise ValueError(
                    f"{path}: run #{i}: {key!r} must be {' or '.join(t.__name__ for t in types)}, "
                    f"got {type(value).__name__}"
                )
        for key, item in _RUN_ITEM_TYPES.items():
            if any(not isinstance(x, item) for x in entry.get(key) or []):
                raise ValueError(f"{path}: run #{i}: every {key!r} entry must be {item.__name__}")
        for key, types in _COMMAND_FIELD_TYPES.items():
            value = (entry.get("command") or {}).get(key)
            if value is not None and not isinstance(value, types):
                raise ValueError(
                    f"{path}: run #{i}: command {key!r} must be a list, got {type(value).__name__}"
                )


def read_manifest(exp_dir: Path) -> dict[str, Any] | None:
    """The manifest, or None when there is none. ValueError naming the file if corrupt."""
    path = manifest_path(exp_dir)
    try:
        data = jsontext.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except jsontext.JsonTextError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f'{path}: expected an object with a "runs" list')
    if not all(isinstance(run, dict) for run in data["runs"]):
        raise ValueError(f'{path}: every entry of "runs" must be an object')
    _check_run_fields(data["runs"], path)
    return data


def _write(exp_dir: Path, manifest: Mapping[str, Any]) -> None:
    write_text_atomic(manifest_path(exp_dir), json.dumps(manifest, indent=2) + "\n")


# Differences from the previous run: (what, how to read it from a run, warn loudly?)
_COMPARED: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("torch version", ("software", "torch"), True),
    ("CUDA version", ("software", "cuda"), True),
    ("cuDNN version", ("software", "cudnn"), True),
    ("dataset archive sha256", ("dataset", "archive_sha256"), True),
    ("class-split hash", ("dataset", "split_hash"), True),
    # Said once by the resume itself (metasuite.training.runner.say_execution_changes);
    # recorded here too, quietly.
    ("backend (resolved)", ("numerics", "backend"), False),
    ("precision", ("numerics", "precision"), False),
    ("CPU thread count", ("numerics", "num_threads"), False),
    ("world size", ("numerics", "world_size"), False),
    ("config hash", ("config_hash",), False),
    ("Python version", ("software", "python"), False),
    ("numpy version", ("software", "numpy"), False),
    ("metasuite version", ("metasuite_version",), False),
    ("git commit", ("git", "commit"), False),
    ("git diff sha256", ("git", "diff_sha256"), False),
    ("host", ("host",), False),
)


def _get(entry: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = entry
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def compare_runs(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """``("torch version: 2.4.0 -> 2.5.1", loud)`` for everything that changed."""
    out = []
    for what, path, loud in _COMPARED:
        old, new = _get(previous, path), _get(current, path)
        if old != new:
            out.append((f"{what}: {old} -> {new}", loud))
    return out


FILE_ONLY = "metasuite_file_only"
"""A log record carrying this attribute (``extra={FILE_ONLY: True}``) goes to the
experiment's log file only: its text already reached the console another way."""


def _warn(message: str) -> None:
    """Once on the console (a Python warning: callers and tests can catch it) and once
    in the experiment's log file, never twice on the console."""
    warnings.warn(message, ReproducibilityWarning, stacklevel=3)
    log.warning(message, extra={FILE_ONLY: True})


def start_run(
    exp_dir: Path,
    config: ExperimentConfig,
    *,
    argv: Sequence[str] | None = None,
    devices: Sequence[Any] = ("cpu",),
    gpu_ids: Sequence[int] | None = None,
    dataset: DatasetInfo | None = None,
    resumed_from: Mapping[str, int] | None = None,
    numerics: Mapping[str, Any] | None = None,
    forced_differences: Sequence[str] = (),
    backbone: Mapping[str, Any] | None = None,
    execution_changes: Sequence[str] = (),
) -> RunRecord:
    """Append a run to ``exp_dir/manifest.json`` (creating it) and return it.

    Call once per process, after the config snapshot is settled and the data is loaded
    (``dataset`` from :func:`dataset_info`), before training. ``resumed_from`` is e.g.
    ``{"epoch": 3, "iteration": 1500}`` (or a checkpoint's whole ``progress``) when
    continuing from a checkpoint. ``numerics``: the resolved backend, precision and
    thread count (:func:`metasuite.training.runtime.numerics`); ``forced_differences``:
    what ``--force`` let differ from the run resumed; ``execution_changes``: how the
    execution differs from the checkpoint resumed (backend, threads, world size: the
    resume policy, :func:`metasuite.training.runtime.execution_changes`). A previous run
    that never finished (the process was killed) is marked ``"killed"``.
    """
    exp_dir = Path(exp_dir)
    notes: list[str] = []
    try:
        manifest = read_manifest(exp_dir)
    except ValueError as exc:
        kept = manifest_path(exp_dir).with_name(
            f"{MANIFEST_FILE}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
        )
        os.replace(manifest_path(exp_dir), kept)
        notes.append(f"previous manifest unreadable ({exc}); kept as {kept.name}")
        _warn(notes[-1])
        manifest = None
    if manifest is None:
        manifest = {"format": FORMAT, "experiment_name": config.experiment_name, "runs": []}
    runs: list[dict[str, Any]] = manifest["runs"]

    dataset = dataset if dataset is not None else DatasetInfo(name=config.dataset_name)
    resolved_devices = device_names(devices)
    if gpu_ids is None:
        gpu_ids = [int(d["device"].split(":")[1]) for d in resolved_devices if ":" in d["device"]]
    entry: dict[str, Any] = {
        "run": len(runs) + 1,
        "status": "running",
        "started": utc_now(),
        "ended": None,
        "message": "",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": {
            "argv": list(sys.argv if argv is None else argv),
            "executable": sys.executable,
            "cwd": os.getcwd(),
            "gpu_ids": list(gpu_ids),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        },
        "metasuite_version": __version__,
        "git": git_info(),
        "software": software_versions(),
        "devices": resolved_devices,
        "config_hash": config_hash(config),
        "meta_learner": config.meta_learner,
        # the network: its name, and for an nn.Module its factory's arguments, head,
        # batch-norm mode and every parameter's name and shape
        "backbone": dict(backbone) if backbone is not None else {"name": config.backbone},
        "dataset": {k: v for k, v in asdict(dataset).items() if k != "text" or v is not None},
        "seeds": {
            "train_seed": config.train_seed,
            "val_seed": config.val_seed,
            "test_seed": config.effective_test_seed,
        },
        "resumed_from": None
        if resumed_from is None
        else {k: int(resumed_from[k]) for k in ("epoch", "iteration") if k in resumed_from},
        "numerics": None if numerics is None else dict(numerics),
        "forced_differences": list(forced_differences),
        "execution_changes": list(execution_changes),
        "changes_since_previous_run": [],
        "warnings": [],
        "notes": notes,
    }
    loud: list[str] = []
    if runs:
        previous = runs[-1]
        if previous.get("ended") is None and previous.get("status") == "running":
            previous["status"] = "killed"
            previous["message"] = "the process ended without recording an end (killed?)"
        for text, is_loud in compare_runs(previous, entry):
            entry["changes_since_previous_run"].append(text)
            if is_loud:
                loud.append(text)
    for text in loud:
        message = (
            f"{exp_dir.name}: resuming with a different {text}; results may not match an "
            "uninterrupted run (recorded in manifest.json)"
        )
        entry["warnings"].append(message)
        _warn(message)
    runs.append(entry)
    _write(exp_dir, manifest)
    return RunRecord(exp_dir, len(runs) - 1, entry, list(entry["warnings"]))


def finish_run(exp_dir: Path, status: str, *, message: str = "", run: int | None = None) -> bool:
    """Record the end time and final status of the latest (or the ``run``-th) run.

    Returns False, changing nothing, when that run already has an end: the first
    outcome recorded (e.g. "interrupted" from a signal handler) is the true one.
    """
    if status not in FINAL_STATUSES:
        raise ValueError(f"finish_run status must be one of {FINAL_STATUSES}, got {status!r}")
    manifest = read_manifest(Path(exp_dir))
    if manifest is None or not manifest["runs"]:
        raise ValueError(f"{manifest_path(Path(exp_dir))}: no run to finish (start_run first)")
    entry = manifest["runs"][-1 if run is None else run]
    if entry.get("ended") is not None:
        return False
    entry["ended"] = utc_now()
    entry["status"] = status
    entry["message"] = message
    _write(Path(exp_dir), manifest)
    return True


@contextlib.contextmanager
def recorded_run(
    exp_dir: Path,
    config: ExperimentConfig,
    *,
    devices: Sequence[Any],
    tasks: Any = None,
    resumed_from: Mapping[str, int] | None = None,
    argv: Sequence[str] | None = None,
    numerics: Mapping[str, Any] | None = None,
    forced_differences: Sequence[str] = (),
    backbone: Mapping[str, Any] | None = None,
    execution_changes: Sequence[str] = (),
) -> Iterator[RunRecord]:
    """Start a run, and make sure it gets an end: the block calls ``run.finish(status)``
    with its outcome; an exception records "failed" (or "interrupted" for Ctrl-C) with
    the error, and is re-raised."""
    record = start_run(
        exp_dir,
        config,
        argv=argv,
        devices=devices,
        dataset=dataset_info(config, tasks),
        resumed_from=resumed_from,
        numerics=numerics,
        forced_differences=forced_differences,
        backbone=backbone,
        execution_changes=execution_changes,
    )
    try:
        yield record
    except KeyboardInterrupt:
        record.finish("interrupted", "KeyboardInterrupt")
        raise
    except BaseException as exc:
        record.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    else:
        record.finish("failed", "the run ended without recording an outcome")


# ------------------------------------------------------------------ reading it back


def _backbone_line(backbone: Any) -> str:
    """The network in one line; manifests written before backbones existed: conv."""
    if not isinstance(backbone, Mapping):
        return "conv"
    parts = [str(backbone.get("name", "conv"))]
    if backbone.get("kwargs"):
        parts.append(json.dumps(backbone["kwargs"], sort_keys=True))
    for key in ("head", "batch_norm_mode"):
        if backbone.get(key):
            parts.append(f"{key} {backbone[key]}")
    params = backbone.get("parameters")
    if isinstance(params, Mapping):
        count = sum(math.prod(s) for s in params.values() if isinstance(s, list))
        parts.append(f"{len(params)} tensors, {count:,} weights")
    return ", ".join(parts)


def _duration(start: str | None, end: str | None) -> str:
    from datetime import datetime

    if not start or not end:
        return ""
    try:
        seconds = int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
    except ValueError:
        return ""
    hours, rest = divmod(seconds, 3600)
    return f" ({hours}h {rest // 60:02d}m {rest % 60:02d}s)"


def format_manifest(manifest: Mapping[str, Any]) -> str:
    """A readable account of every run, for ``metasuite show``."""
    runs = manifest.get("runs", [])
    lines = [f"manifest of {manifest.get('experiment_name', '?')}: {len(runs)} run(s)"]
    for entry in runs:
        git = entry.get("git") or {}
        sw = entry.get("software") or {}
        cmd = entry.get("command") or {}
        data = entry.get("dataset") or {}
        seeds = entry.get("seeds") or {}
        end = entry.get("ended") or "no end recorded"
        lines.append("")
        lines.append(
            f"run {entry.get('run')}: {entry.get('status')}  {entry.get('started')} -> {end}"
            f"{_duration(entry.get('started'), entry.get('ended'))}"
        )
        if entry.get("message"):
            lines.append(f"  message:     {entry['message']}")
        if entry.get("resumed_from"):
            resumed = ", ".join(f"{k} {v}" for k, v in entry["resumed_from"].items())
            lines.append(f"  resumed from {resumed}")
        argv = " ".join(shlex.quote(a) for a in cmd.get("argv") or [])
        lines.append(f"  command:     {cmd.get('executable')} {argv}")
        lines.append(f"  in folder:   {cmd.get('cwd')}")
        lines.append(f"  host:        {entry.get('host')}  (pid {entry.get('pid')})")
        gpus = cmd.get("gpu_ids") or []
        lines.append(
            "  devices:     "
            + ", ".join(f"{d.get('device')} ({d.get('name')})" for d in entry.get("devices", []))
            + f"; GPU ids {gpus if gpus else 'none'}"
            + (
                f"; CUDA_VISIBLE_DEVICES={cmd['cuda_visible_devices']}"
                if cmd.get("cuda_visible_devices") is not None
                else ""
            )
        )
        if git.get("commit"):
            state = "clean"
            if git.get("dirty"):
                state = f"dirty, diff sha256 {git.get('diff_sha256')}"
                if git.get("untracked_files"):
                    state += f", {len(git['untracked_files'])} untracked files"
            code = f"git {git['commit']} ({state})"
        else:
            code = f"git: {git.get('error') or 'unknown'}"
        lines.append(f"  metasuite:   {entry.get('metasuite_version')}, {code}")
        lines.append(
            f"  software:    Python {sw.get('python')}, torch {sw.get('torch')}, numpy "
            f"{sw.get('numpy')}, CUDA {sw.get('cuda')}, cuDNN {sw.get('cudnn')}"
        )
        lines.append(f"  config hash: {entry.get('config_hash')}")
        lines.append(f"  learner:     {entry.get('meta_learner', 'maml')}")
        lines.append(f"  backbone:    {_backbone_line(entry.get('backbone'))}")
        lines.append(
            f"  dataset:     {data.get('name')}: archive sha256 {data.get('archive_sha256')}, "
            f"class-split hash {data.get('split_hash')}"
            + (f" ({data['note']})" if data.get("note") else "")
        )
        lines.append(
            "  seeds:       "
            + ", ".join(f"{k.removesuffix('_seed')} {v}" for k, v in seeds.items())
        )
        for change in entry.get("changes_since_previous_run") or []:
            lines.append(f"  changed:     {change}")
        for change in entry.get("execution_changes") or []:
            lines.append(f"  resumed on:  {change} (execution; float summation order)")
        for change in entry.get("forced_differences") or []:
            lines.append(f"  --force:     {change}")
        for warning in entry.get("warnings") or []:
            lines.append(f"  WARNING:     {warning}")
        for note in entry.get("notes") or []:
            lines.append(f"  note:        {note}")
    return "\n".join(lines) + "\n"


def _normalised_config_lines(path: Path) -> tuple[list[str], str | None]:
    """The config as ``to_json`` writes it (so key order and 0/1-for-bool do not show as
    differences), or the raw sorted JSON with the reason when it does not validate."""
    from metasuite.config import from_dict, to_json
    from metasuite.errors import ConfigError

    try:
        raw = jsontext.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
        return [], f"{path}: cannot read ({exc})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return to_json(from_dict(raw, source=str(path))).splitlines(keepends=True), None
    except ConfigError as exc:
        text = json.dumps(raw, indent=2, sort_keys=True) + "\n"
        return text.splitlines(keepends=True), str(exc)


def _generated_config(name: str, configs: Path) -> Path | None:
    """``<configs>/<name>.json``, else the generated config whose experiment_name is name."""
    direct = configs / f"{name}.json"
    if direct.is_file():
        return direct
    if configs.is_dir():
        for path in sorted(configs.glob("*.json")):
            try:
                if jsontext.loads(path.read_text(encoding="utf-8")).get("experiment_name") == name:
                    return path
            except (OSError, ValueError, AttributeError):
                continue
    return None


def config_diff(generated: Path, snapshot: Path) -> str:
    """Unified diff from the generated config to the experiment's snapshot, or a line
    saying there is none."""
    import difflib

    old, old_problem = _normalised_config_lines(generated)
    new, new_problem = _normalised_config_lines(snapshot)
    lines = [f"config: {p}\n" for p in (old_problem, new_problem) if p]
    diff = list(
        difflib.unified_diff(
            old, new, fromfile=f"generated {generated}", tofile=f"snapshot {snapshot}", n=1
        )
    )
    if not diff:
        return "".join(lines) + f"config: no differences between {generated} and {snapshot}\n"
    return (
        "".join(lines)
        + "config: the snapshot differs from the generated config:\n"
        + "".join(line if line.endswith("\n") else line + "\n" for line in diff)
    )


def show_experiment(name: str, root: Path, configs: Path) -> str:
    """Manifest, config drift and whether the snapshot changed since the last run began."""
    from metasuite.config import load_config
    from metasuite.errors import UserError

    folder = Path(name) if os.sep in name and Path(name).is_dir() else root / name
    name = folder.name
    generated = _generated_config(name, configs)
    if not folder.is_dir() and generated is None:
        raise UserError(f"no experiment {name!r}: no folder {folder} and no {configs / name}.json")
    parts = []
    try:
        manifest = read_manifest(folder)
    except ValueError as exc:
        manifest = None
        parts.append(f"manifest: {exc}\n")
    else:
        if manifest is None:
            parts.append(f"no {MANIFEST_FILE} in {folder} (not started yet)\n")
        else:
            parts.append(format_manifest(manifest))
    parts.append("\n")
    snapshot = ExperimentDir(folder).config_path
    if not snapshot.is_file():
        parts.append(f"config: no snapshot {snapshot} yet\n")
    elif generated is None:
        parts.append(f"config: no generated config for {name!r} in {configs}; nothing to compare\n")
    else:
        parts.append(config_diff(generated, snapshot))
    if manifest and manifest["runs"] and snapshot.is_file():
        recorded = manifest["runs"][-1].get("config_hash")
        try:
            current = config_hash(load_config(snapshot))
        except UserError:
            current = None
        if current is not None and recorded != current:
            parts.append(
                f"config: {snapshot} was changed after run {manifest['runs'][-1].get('run')} "
                f"started (hash then {recorded}, now {current})\n"
            )
    return "".join(parts)


__all__ = [
    "MANIFEST_FILE",
    "DatasetInfo",
    "ReproducibilityWarning",
    "RunRecord",
    "class_split_change",
    "config_diff",
    "dataset_info",
    "finish_run",
    "format_manifest",
    "git_info",
    "read_manifest",
    "recorded_run",
    "show_experiment",
    "start_run",
]
