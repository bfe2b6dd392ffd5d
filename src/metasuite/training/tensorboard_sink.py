"""TensorBoard event files for one experiment: the optional sink of the metrics log.

The only module that imports ``tensorboard`` (through ``torch.utils.tensorboard``), and
only when a run starts, so ``metasuite --help`` stays fast and the package stays
optional (``pip install metasuite[tensorboard]``, installed by ``install.sh``).

Each experiment is one TensorBoard run, ``<experiment>/tensorboard/``, so
``tensorboard --logdir experiments/`` shows a whole suite side by side. Scalars (step =
meta-iterations completed): ``train/loss``, ``train/accuracy``, ``train/learning_rate``
per meta-iteration; ``val/loss``, ``val/accuracy``, ``msl/step_<k>`` and
``lslr/<tensor>/step_<k>`` per epoch; ``test/ensemble_accuracy`` and
``test/best_single_accuracy`` at the end.

After a resume the writer starts with ``purge_step`` (the checkpoint's iteration + 1),
which TensorBoard reads as "drop every earlier event at or after this step", so the
steps a killed run wrote past its checkpoint are not shown twice. A fresh start removes
the old event files instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLUSH_SECONDS = 15
"""How often the writer's thread writes queued events out: live enough to watch."""
EVENT_FILE_PREFIX = "events.out.tfevents."


def available() -> bool:
    """Whether the ``tensorboard`` package can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_sink(folder: Path) -> TensorBoardSink | None:
    """The sink writing into ``folder``, or None (and one info line) without tensorboard."""
    if not available():
        log.info("tensorboard is not installed: no event files (pip install tensorboard)")
        return None
    return TensorBoardSink(folder)


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The TensorBoard tags and values of one metrics record (None values left out)."""
    split = record["split"]
    out: dict[str, Any] = {}
    if split == "test":
        out["test/ensemble_accuracy"] = record.get("accuracy")
        out["test/best_single_accuracy"] = record.get("best_single_accuracy")
    else:
        for key in ("loss", "accuracy", "learning_rate"):
            if split == "val" and key == "learning_rate":
                continue  # the same as train's, once per epoch
            out[f"{split}/{key}"] = record.get(key)
    for k, weight in enumerate(record.get("msl_weights") or ()):
        out[f"msl/step_{k}"] = weight
    for name, rates in (record.get("lslr") or {}).items():
        for k, rate in enumerate(rates):
            out[f"lslr/{name}/step_{k}"] = rate
    return {tag: float(v) for tag, v in out.items() if v is not None}


class TensorBoardSink:
    """A :class:`metasuite.training.metrics.Sink` writing one TensorBoard run."""

    name = "tensorboard"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.writer: Any = None

    def start(self, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if purge_step is None:  # a fresh start: earlier event files are of a void run
            for old in self.folder.glob(f"{EVENT_FILE_PREFIX}*"):
                old.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(
            str(self.folder), purge_step=purge_step, flush_secs=FLUSH_SECONDS
        )

    def write(self, record: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        step, walltime = int(record["iteration"]), float(record["time"])
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, step, walltime=walltime)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()


__all__ = ["TensorBoardSink", "available", "scalars", "tensorboard_sink"]
