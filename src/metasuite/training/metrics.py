"""The metrics sink: one metrics log per experiment, and optional sinks hanging off it.

``logs/metrics.jsonl`` holds one JSON object per line, written by the writer rank only
(the others get a :class:`NullMetrics`)::

    {"split": "train", "epoch": 0, "iteration": 1, "loss": ..., "accuracy": ...,
     "learning_rate": ..., "time": <unix seconds>}
    {"split": "val", "epoch": 0, "iteration": 6, "loss": ..., "accuracy": ...,
     "loss_std": ..., "accuracy_std": ..., "learning_rate": ..., "epoch_time_s": ...,
     "msl_weights": [...], "lslr": {"conv0.weight": [...], ...}, "time": ...}
    {"split": "test", "epoch": 3, "iteration": 18, "accuracy": ..., "accuracy_ci95": ...,
     "best_single_accuracy": ..., "best_single_ci95": ..., "time": ...}

``epoch`` is the stored 0-based index of the epoch a record belongs to, ``iteration``
the meta-iterations completed when it was written (the step of every sink). A val
record carries the epoch's diagnostics: the MSL weights its training used and the
learned LSLR rates per adapted tensor and inner step at its end (the mean over elements
per step for Meta-SGD's per-element rates); each is absent where the method has none.

Why it is exact after a kill: records are buffered in memory and appended (flushed and
fsynced) *before* each checkpoint is saved, so the file is never behind the checkpoint
a run resumes from; it may be ahead (killed between the two), and :meth:`MetricsLog.start`
cuts it back to the checkpoint's progress. A resumed run then appends what the
uninterrupted run would have, and the two logs are equal except for ``time`` and
``epoch_time_s``. Buffering keeps the per-iteration cost to a dict and a ``json.dumps``.

Optional sinks (:class:`Sink`; TensorBoard, :mod:`metasuite.training.tensorboard_sink`)
receive every record as it is made, so they can be watched live; they are told on start
which step to purge from, and a sink that raises is warned about once and dropped:
watching must never stop training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from metasuite.config import ExperimentConfig
from metasuite.fsutil import disk_full, is_disk_full, make_dirs, write_text_atomic
from metasuite.training.experiment_dir import ExperimentDir

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class Sink(Protocol):
    """Something that watches the records (TensorBoard). Any exception it raises is
    caught by :class:`MetricsLog`, warned about once, and the sink is dropped."""

    name: str

    def start(self, purge_step: int | None) -> None:
        """Open; ``purge_step``: steps >= it are stale (a resumed run), None: a fresh
        start, anything recorded before is void."""

    def write(self, record: Mapping[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _number(value: Any) -> float | None:
    """JSON has no NaN: an undefined number is null."""
    value = float(value)
    return value if math.isfinite(value) else None


def keep_on_resume(record: Mapping[str, Any], epoch: int, iteration: int) -> bool:
    """Whether a record written before a resume from a checkpoint with ``epoch``
    completed epochs and ``iteration`` completed meta-iterations belongs to it.

    Train records up to the checkpoint's iteration, val records of completed epochs;
    never a test record (a resumed run tests again at its end).
    """
    split = record.get("split")
    if split == "train":
        return int(record["iteration"]) <= iteration
    if split == "val":
        return int(record["epoch"]) < epoch
    return False


class MetricsLog:
    """The writer rank's metrics log (``path``) and its optional sinks."""

    def __init__(self, path: Path, sinks: list[Sink] | None = None) -> None:
        self.path = path
        self.sinks: list[Sink] = list(sinks or [])
        self._buffer: list[str] = []
        self._open = False

    # ------------------------------------------------------------------ life cycle
    def start(self, epoch: int, iteration: int) -> None:
        """Begin a run at a checkpoint's progress (0, 0: a fresh start, the log emptied):
        cut the file back to what that checkpoint knows, then open the sinks."""
        make_dirs(self.path.parent)
        if iteration == 0 and epoch == 0:
            kept: list[str] = []
        else:
            kept = self._lines_to_keep(epoch, iteration)
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))
        self._buffer = []
        self._open = True
        purge = None if iteration == 0 and epoch == 0 else iteration + 1
        for sink in list(self.sinks):
            self._guarded(sink, "start", purge)

    def _lines_to_keep(self, epoch: int, iteration: int) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        lines = text.split("\n")
        kept = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                keep = keep_on_resume(record, epoch, iteration)
            except (ValueError, TypeError, KeyError, AttributeError):
                if not (number == len(lines) and not text.endswith("\n")):
                    log.warning(
                        "%s line %d is damaged (not a metrics record); dropped", self.path, number
                    )
                continue  # else a line cut short by a kill mid-append: nothing to say
            if keep:
                kept.append(line)
        return kept

    def add(self, record: dict[str, Any]) -> None:
        """Buffer one record (written at the next :meth:`flush`) and show it to the sinks.
        Ignored before :meth:`start` (a test-only run leaves the log as it is)."""
        if not self._open:
            return
        record = {**record, "time": round(time.time(), 3)}
        self._buffer.append(json.dumps(record, allow_nan=False))
        for sink in list(self.sinks):
            self._guarded(sink, "write", record)

    def flush(self) -> None:
        """Append the buffered records, durably: called before every checkpoint save."""
        if not self._open:
            return
        if self._buffer:
            text = "".join(line + "\n" for line in self._buffer)
            try:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full(self.path) from None
                raise
            self._buffer = []
        for sink in list(self.sinks):
            self._guarded(sink, "flush")

    def close(self) -> None:
        """Flush and close the sinks; safe to call twice and after a failure."""
        if not self._open:
            return
        try:
            self.flush()
        finally:
            self._open = False
            for sink in list(self.sinks):
                self._guarded(sink, "close")

    def _guarded(self, sink: Sink, method: str, *args: Any) -> None:
        try:
            getattr(sink, method)(*args)
        except Exception as exc:  # a watcher must never stop training
            self.sinks.remove(sink)
            log.warning(
                "%s sink failed (%s: %s); training goes on without it",
                sink.name,
                type(exc).__name__,
                exc,
            )
            if method != "close":
                with contextlib.suppress(Exception):
                    sink.close()


class NullMetrics(MetricsLog):
    """What a rank that writes nothing holds: every call is a no-op."""

    def __init__(self) -> None:
        super().__init__(Path(os.devnull))

    def start(self, epoch: int, iteration: int) -> None:
        pass


# ---------------------------------------------------------------------- records


def iteration_record(epoch: int, iteration: int, metrics: Mapping[str, float]) -> dict[str, Any]:
    """A train record: one meta-iteration's loss, accuracy and meta learning rate."""
    return {
        "split": "train",
        "epoch": epoch,
        "iteration": iteration,
        "loss": _number(metrics["loss"]),
        "accuracy": _number(metrics["accuracy"]),
        "learning_rate": _number(metrics.get("learning_rate", math.nan)),
    }


def epoch_record(
    row: Mapping[str, float], iteration: int, diagnostics: Mapping[str, Any]
) -> dict[str, Any]:
    """A val record from the epoch's summary row, with the epoch's diagnostics."""
    return {
        "split": "val",
        "epoch": int(row["epoch"]),
        "iteration": iteration,
        "loss": _number(row["val_loss_mean"]),
        "accuracy": _number(row["val_accuracy_mean"]),
        "loss_std": _number(row["val_loss_std"]),
        "accuracy_std": _number(row["val_accuracy_std"]),
        "learning_rate": _number(row["learning_rate"]),
        "epoch_time_s": round(float(row["epoch_time_s"]), 3),
        **diagnostics,
    }


def result_record(epoch: int, iteration: int, summary: Mapping[str, Any]) -> dict[str, Any]:
    """A test record: the ensemble's and the best single model's accuracy."""
    ensemble, single = summary["ensemble"], summary["best_single"]
    return {
        "split": "test",
        "epoch": epoch,
        "iteration": iteration,
        "accuracy": _number(ensemble["accuracy_mean"]),
        "accuracy_ci95": _number(ensemble["accuracy_ci95"]),
        "best_single_accuracy": _number(single["accuracy_mean"]),
        "best_single_ci95": _number(single["accuracy_ci95"]),
    }


def inner_loop_diagnostics(learner: Any, cfg: ExperimentConfig, epoch: int) -> dict[str, Any]:
    """MSL weights used in ``epoch`` and the learned inner rates now, where the method
    has them (MAML family with MSL / LSLR, Meta-SGD); ``{}`` for any other learner.

    Read by duck typing (``rates``, ``learnable_rates``) so that a learner without an
    inner loop needs nothing to be left out; a distributed wrapper is looked through.
    """
    from metasuite.learner.reference import train_plan

    inner = getattr(learner, "learner", learner)
    out: dict[str, Any] = {}
    if cfg.use_multi_step_loss_optimization and cfg.meta_learner in ("maml", "meta_sgd", "anil"):
        out["msl_weights"] = [float(w) for w in train_plan(cfg, epoch).loss_weights]
    rates = getattr(inner, "rates", None)
    if getattr(inner, "learnable_rates", False) and isinstance(rates, Mapping):
        lslr = {}
        for name, tensor in rates.items():
            t = tensor.detach().float().cpu()
            per_step = t.reshape(t.shape[0], -1).mean(1) if t.dim() > 1 else t
            lslr[name] = [float(v) for v in per_step]
        out["lslr"] = lslr
    return out


def open_metrics(exp: ExperimentDir, cfg: ExperimentConfig, *, is_writer: bool) -> MetricsLog:
    """The writer's log with the sinks the config and the installed packages allow."""
    if not is_writer:
        return NullMetrics()
    sinks: list[Sink] = []
    if cfg.tensorboard:
        from metasuite.training.tensorboard_sink import tensorboard_sink

        sink = tensorboard_sink(exp.tensorboard_dir)
        if sink is not None:
            sinks.append(sink)
    return MetricsLog(exp.metrics_path, sinks)


__all__ = [
    "MetricsLog",
    "NullMetrics",
    "Sink",
    "epoch_record",
    "inner_loop_diagnostics",
    "iteration_record",
    "keep_on_resume",
    "open_metrics",
    "result_record",
]
