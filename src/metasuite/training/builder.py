"""The experiment loop: epochs of meta-iterations, validation, checkpoints, the test.

Only the loop lives here; deciding where to start (scratch, latest, an epoch), the lock
and the folder belong to :mod:`metasuite.training.runner`. Everything the loop needs to carry on
exactly where it stopped is in :class:`Progress` plus the learner's state and the RNG
states, and all of it is in every checkpoint. Train tasks need no saved state at all:
task ``i`` of a split is a pure function of (seed, i), and meta-iteration ``it`` uses
train tasks ``it * batch_size + b`` for ``b < batch_size``.

Checkpoint payload (version ``checkpoint.FORMAT_VERSION``)::

    {"kind": "iteration" | "epoch", "metasuite_version": str, "saved_at": ISO time,
     "config": config.to_dict(cfg), "config_hash": str,
     "progress": Progress.to_payload(), "learner": MamlSystem.state_dict(),
     "rng": runtime.capture_rng_state()}

A run's numbers are those of the uninterrupted run: per-iteration training metrics of
the epoch in progress are checkpointed (so the epoch's mean and std are exact), and the
summary CSV is rewritten from the checkpointed rows, never appended to.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

import torch

from metasuite import __version__
from metasuite.config import ExperimentConfig, config_hash, to_dict
from metasuite.data.batch import TaskBatch
from metasuite.errors import EnvironmentFault, ExitCode, UserError
from metasuite.progress import progress_bar
from metasuite.stats import mean_ci95, mean_std, per_task_accuracy
from metasuite.text import plural, shown_epoch
from metasuite.training.checkpoint import CheckpointStore, CorruptCheckpointError, load_checkpoint
from metasuite.training.experiment_dir import ExperimentDir, utc_now
from metasuite.training.faults import fault_point
from metasuite.training.metrics import (
    epoch_record,
    inner_loop_diagnostics,
    iteration_record,
    open_metrics,
    result_record,
)
from metasuite.training.runtime import capture_rng_state, restore_rng_state
from metasuite.training.signals import StopRequest

log = logging.getLogger(__name__)

SyncGradients = Callable[[list[torch.Tensor]], None]
KEEP_RECENT_CHECKPOINTS = 2
"""Newest checkpoints always kept, so a damaged newest one has a predecessor."""
LIVE_PROGRESS_SECONDS = 2.0
"""Least time between two writes of ``logs/live_progress.json`` (an fsynced file: once
per iteration would cost more than a tiny iteration on a slow disk)."""


class Outcome(IntEnum):
    """How a call to :meth:`Builder.run` ended; the value is the exit status, taken from
    :class:`metasuite.errors.ExitCode` (where every exit status is defined)."""

    DONE = ExitCode.DONE
    PAUSED = ExitCode.PAUSED
    INTERRUPTED = ExitCode.STOPPED
    PRUNED = ExitCode.PRUNED


class Sampler(Protocol):
    def batch(self, indices: Sequence[int]) -> TaskBatch: ...


class Tasks(Protocol):
    train: Sampler
    val: Sampler
    test: Sampler


class Learner(Protocol):
    def train_step(
        self,
        batch: TaskBatch,
        epoch: int,
        *,
        total_tasks: int | None = None,
        sync_gradients: SyncGradients | None = None,
    ) -> dict[str, float]: ...

    def evaluate(self, batch: TaskBatch) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Progress:
    """Counters and statistics so far: what a checkpoint needs besides the learner."""

    epoch: int = 0
    """Completed epochs (the epoch in progress has 0-based index ``epoch``)."""
    iteration: int = 0
    """Completed meta-iterations since the start of training."""
    rows: list[dict[str, float]] = field(default_factory=list)
    """One summary row per completed epoch (the CSV's rows)."""
    val_history: list[dict[str, float]] = field(default_factory=list)
    """``{"epoch", "accuracy", "loss"}`` per completed epoch, for top-N and best."""
    train_losses: list[float] = field(default_factory=list)
    train_accuracies: list[float] = field(default_factory=list)
    learning_rate: float = math.nan
    """Learning rate of the epoch in progress (as the learner reports it)."""
    epoch_elapsed_s: float = 0.0
    """Seconds spent on the epoch in progress before the last checkpoint."""

    def to_payload(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "rows": [dict(r) for r in self.rows],
            "val_history": [dict(v) for v in self.val_history],
            "train_losses": list(self.train_losses),
            "train_accuracies": list(self.train_accuracies),
            "learning_rate": self.learning_rate,
            "epoch_elapsed_s": self.epoch_elapsed_s,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Progress:
        return cls(
            epoch=int(data["epoch"]),
            iteration=int(data["iteration"]),
            rows=[dict(r) for r in data["rows"]],
            val_history=[dict(v) for v in data["val_history"]],
            train_losses=[float(x) for x in data["train_losses"]],
            train_accuracies=[float(x) for x in data["train_accuracies"]],
            learning_rate=float(data["learning_rate"]),
            epoch_elapsed_s=float(data["epoch_elapsed_s"]),
        )

    def ranked_epochs(self) -> list[int]:
        """Epochs from best to worst validation accuracy (ties: the earlier epoch)."""
        ranked = sorted(self.val_history, key=lambda v: (-v["accuracy"], v["epoch"]))
        return [int(v["epoch"]) for v in ranked]

    def best(self) -> tuple[float | None, int | None]:
        ranked = self.ranked_epochs()
        if not ranked:
            return None, None
        best = next(v for v in self.val_history if int(v["epoch"]) == ranked[0])
        return float(best["accuracy"]), ranked[0]


class EvaluationStopped(Exception):
    """A stop request seen between two evaluation batches (validation or test)."""


def _task_losses(result: Any, batch: TaskBatch) -> list[float]:
    """Per-task query loss (cross-entropy of the final step), from the query
    probabilities: the learner's result carries only their mean over tasks."""
    probs = result.probabilities.double()
    picked = probs.gather(-1, batch.query_y.cpu().unsqueeze(-1)).squeeze(-1)
    losses = -picked.clamp_min(1e-45).log().mean(-1)
    return [float(x) for x in losses.reshape(-1)]


class Builder:
    """Runs one experiment's epochs, validation and test from a given starting point.

    ``rank``/``world_size``/``sync_gradients`` let a distributed launcher run the same
    loop on several processes: each rank trains its share of a meta-batch
    (:meth:`meta_iteration`) and only the rank with ``is_writer`` writes files;
    ``barrier`` (all ranks wait) runs before the test reads the writer's checkpoints.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        learner: Learner,
        tasks: Tasks,
        experiment: ExperimentDir,
        *,
        device: torch.device,
        stop: StopRequest | None = None,
        quiet: bool = False,
        rank: int = 0,
        world_size: int = 1,
        sync_gradients: SyncGradients | None = None,
        is_writer: bool = True,
        barrier: Callable[[], None] | None = None,
        numerics: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = config
        self.learner = learner
        self.tasks = tasks
        self.exp = experiment
        self.store = CheckpointStore(experiment.checkpoints)
        self.device = device
        self.stop = stop or StopRequest()
        self.quiet = quiet
        self.rank = rank
        self.world_size = world_size
        self.sync_gradients = sync_gradients
        self.is_writer = is_writer
        self.barrier = barrier
        self.numerics = numerics
        """Resolved backend, precision, thread count (runtime.numerics), kept in checkpoints."""
        self.progress = Progress()
        self.epochs_this_run = 0
        self.metrics = open_metrics(experiment, config, is_writer=is_writer)
        """The metrics log and its sinks (training.metrics): never behind a checkpoint."""
        self._live_written_at: float | None = None

    # ------------------------------------------------------------------ state
    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint payload (learner, RNGs, counters, statistics)."""
        self.learner.load_state_dict(payload["learner"])
        self.progress = Progress.from_payload(payload["progress"])
        restore_rng_state(payload["rng"])

    def checkpoint_payload(self, kind: str) -> dict[str, Any]:
        return {
            "kind": kind,
            "metasuite_version": __version__,
            "saved_at": utc_now(),
            "config": to_dict(self.cfg),
            "config_hash": config_hash(self.cfg),
            "progress": self.progress.to_payload(),
            "learner": self.learner.state_dict(),
            "rng": capture_rng_state(),
            **({} if self.numerics is None else {"numerics": self.numerics}),
        }

    def save_checkpoint(self, *, epoch_end: int | None) -> None:
        if not self.is_writer:
            return
        payload = self.checkpoint_payload("epoch" if epoch_end is not None else "iteration")
        self.metrics.flush()  # first: a kill between the two leaves the log ahead, cut on resume
        path = self.store.save(payload, self.progress.iteration, epoch_end)
        fault_point("checkpoint-done")
        top = self.progress.ranked_epochs()[: self.cfg.max_models_to_save]
        self.store.prune(top, keep_recent=KEEP_RECENT_CHECKPOINTS)
        self.exp.write_summary(self.progress.rows)
        self.write_state("running")
        log.debug("checkpoint %s", path.name)

    def write_state(
        self,
        status: str,
        message: str = "",
        test_accuracy: float | None = None,
        ensemble_left_out: list[int] | None = None,
    ) -> None:
        if not self.is_writer:
            return
        best_acc, best_epoch = self.progress.best()
        self.exp.write_state(
            status,  # type: ignore[arg-type]
            config=self.cfg,
            epoch=self.progress.epoch,
            iteration=self.progress.iteration,
            best_val_accuracy=best_acc,
            best_val_epoch=best_epoch,
            test_accuracy=test_accuracy,
            message=message,
            world_size=self.world_size,
            ensemble_left_out=ensemble_left_out,
        )

    def report_live_progress(self, *, force: bool = False) -> None:
        """Write the iteration reached for watchers, at most every LIVE_PROGRESS_SECONDS."""
        if not self.is_writer:
            return
        now = time.monotonic()
        last = self._live_written_at
        if force or last is None or now - last >= LIVE_PROGRESS_SECONDS:
            self._live_written_at = now
            try:
                self.exp.write_live_progress(self.progress.iteration)
            except (OSError, EnvironmentFault) as exc:
                # Advisory only: a full disk is reported by the next checkpoint, which
                # matters; training must not stop over a progress file.
                log.debug("live progress not written: %s", exc)

    @property
    def training_complete(self) -> bool:
        return self.progress.epoch >= self.cfg.total_epochs

    # ------------------------------------------------------------------ one step
    def rank_slots(self) -> list[int]:
        """This rank's slots of a meta-batch (all of them on a single process)."""
        return list(range(self.rank, self.cfg.batch_size, self.world_size))

    def meta_iteration(self, iteration: int, epoch: int) -> dict[str, float]:
        """Train on this rank's share of meta-batch ``iteration``: one optimizer step."""
        size = self.cfg.batch_size
        indices = [iteration * size + b for b in self.rank_slots()]
        batch = self.tasks.train.batch(indices).to(self.device)
        distributed = self.world_size > 1
        return self.learner.train_step(
            batch,
            epoch,
            total_tasks=size if distributed else None,
            sync_gradients=self.sync_gradients if distributed else None,
        )

    # ------------------------------------------------------------------ the loop
    def run(self) -> Outcome:
        """Train the remaining epochs (up to the pause limit), then test."""
        try:
            self.metrics.start(self.progress.epoch, self.progress.iteration)
            if not self.training_complete:
                outcome = self.train()
                if outcome is not Outcome.DONE:
                    return outcome
            return self.test()
        except KeyboardInterrupt:
            self.write_state(
                "interrupted", "aborted by a second signal; resumes from the last checkpoint"
            )
            raise
        except UserError as exc:
            self.write_state("failed", str(exc))
            raise
        except Exception as exc:
            self.write_state("failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.metrics.close()

    def train(self) -> Outcome:
        cfg = self.cfg
        if self.stop.requested:  # a signal during start-up: nothing new to checkpoint
            return self.interrupted(before_training=True)
        self.write_state("running")
        self.report_live_progress(force=True)
        while not self.training_complete:
            if self.at_epoch_boundary and (reason := self.end_requested()):
                return self.pruned(reason)  # the epoch's checkpoint is saved
            stopped = self.train_epoch()
            if stopped:
                return self.interrupted()
            try:
                self.end_epoch()
            except EvaluationStopped:
                # The epoch's training is done, its validation is not: a checkpoint at
                # the epoch's last iteration resumes straight into that validation.
                self.save_checkpoint(epoch_end=None)
                return self.interrupted()
            if self.stop.requested:
                return self.interrupted()
            self.epochs_this_run += 1
            if not self.training_complete and self.epochs_this_run >= cfg.total_epochs_before_pause:
                message = (
                    f"paused after {plural(self.epochs_this_run, 'epoch')} in this run "
                    f"(total_epochs_before_pause); {self.progress.epoch}/{cfg.total_epochs} "
                    "done; run the same command to continue"
                )
                log.info(message)
                self.write_state("paused", message)
                return Outcome.PAUSED
        return Outcome.DONE

    @property
    def at_epoch_boundary(self) -> bool:
        """No iteration of the epoch in progress done (a mid-epoch resume is not)."""
        return self.progress.iteration == self.progress.epoch * self.cfg.total_iter_per_epoch

    def end_requested(self) -> str | None:
        """The reason of the folder's end request (metasuite tune's pruner), or None.
        Only single-process runs honour it (ranks would need to agree on reading it)."""
        return self.exp.end_requested() if self.world_size == 1 else None

    def pruned(self, reason: str) -> Outcome:
        """End as asked by the folder's end request (experiment_dir.END_REQUEST_FILE),
        between epochs: the end-of-epoch checkpoint is already written, nothing is tested."""
        message = f"pruned after {self.progress.epoch}/{self.cfg.total_epochs} epochs: {reason}"
        log.info(message)
        self.write_state("pruned", message)
        return Outcome.PRUNED

    def interrupted(self, *, before_training: bool = False, during_test: bool = False) -> Outcome:
        if during_test:
            # The members are scored from their checkpoint files, which stay: the rerun
            # tests again from the first member, and gets the same numbers.
            message = (
                f"stopped by {self.stop.signal_name} during the test (training is complete); "
                "run the same command to test again"
            )
        elif before_training:
            where = f"epoch {shown_epoch(self.progress.epoch)}, iteration {self.progress.iteration}"
            what = "during start-up, before training in this run (nothing to checkpoint)"
            if self.progress.iteration:
                what += f"; the checkpoint at {where} is kept"
            message = f"stopped by {self.stop.signal_name} {what}; run the same command to continue"
        else:
            message = (
                f"stopped by {self.stop.signal_name} after checkpointing with "
                f"{self.progress.epoch}/{self.cfg.total_epochs} epochs done, iteration "
                f"{self.progress.iteration}; run the same "
                "command to continue"
            )
        log.warning(message)
        self.write_state("interrupted", message)
        return Outcome.INTERRUPTED

    def train_epoch(self) -> bool:
        """Run the rest of the epoch in progress; True if stopped by a signal."""
        cfg, p = self.cfg, self.progress
        per_epoch = cfg.total_iter_per_epoch
        start = time.monotonic() - p.epoch_elapsed_s
        done_in_epoch = p.iteration - p.epoch * per_epoch
        bar = progress_bar(
            total=per_epoch,
            initial=done_in_epoch,
            desc=f"epoch {p.epoch + 1}/{cfg.total_epochs}",
            quiet=self.quiet,
            leave=False,
            dynamic_ncols=True,
        )
        try:
            while p.iteration < (p.epoch + 1) * per_epoch:
                metrics = self.meta_iteration(p.iteration, p.epoch)
                p.iteration += 1
                p.train_losses.append(float(metrics["loss"]))
                p.train_accuracies.append(float(metrics["accuracy"]))
                p.learning_rate = float(metrics.get("learning_rate", math.nan))
                self.metrics.add(iteration_record(p.epoch, p.iteration, metrics))
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.4f}")
                self.report_live_progress()
                fault_point("iteration")
                end_of_epoch = p.iteration == (p.epoch + 1) * per_epoch
                every = cfg.checkpoint_every_n_iters
                if self.stop.requested or (
                    every > 0 and p.iteration % every == 0 and not end_of_epoch
                ):
                    p.epoch_elapsed_s = time.monotonic() - start
                    self.save_checkpoint(epoch_end=None)
                    if self.stop.requested:
                        return True
        finally:
            bar.close()
        p.epoch_elapsed_s = time.monotonic() - start
        return False

    def end_epoch(self) -> None:
        """Validate, record the epoch's row and write the end-of-epoch checkpoint."""
        p = self.progress
        start = time.monotonic()
        val_losses, val_accs = self.validate()
        elapsed = p.epoch_elapsed_s + (time.monotonic() - start)
        train_loss = mean_std(p.train_losses)
        train_acc = mean_std(p.train_accuracies)
        val_loss = mean_std(val_losses)
        val_acc = mean_std(val_accs)
        row = {
            "epoch": p.epoch,
            "train_loss_mean": train_loss[0],
            "train_loss_std": train_loss[1],
            "train_accuracy_mean": train_acc[0],
            "train_accuracy_std": train_acc[1],
            "val_loss_mean": val_loss[0],
            "val_loss_std": val_loss[1],
            "val_accuracy_mean": val_acc[0],
            "val_accuracy_std": val_acc[1],
            "learning_rate": p.learning_rate,
            "epoch_time_s": elapsed,
        }
        p.rows.append(row)
        diagnostics = inner_loop_diagnostics(self.learner, self.cfg, p.epoch)
        self.metrics.add(epoch_record(row, p.iteration, diagnostics))
        p.val_history.append({"epoch": p.epoch, "accuracy": val_acc[0], "loss": val_loss[0]})
        epoch = p.epoch
        p.epoch += 1
        p.train_losses, p.train_accuracies = [], []
        p.learning_rate, p.epoch_elapsed_s = math.nan, 0.0
        self.save_checkpoint(epoch_end=epoch)
        best_acc, best_epoch = p.best()
        log.info(
            "epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f (best %.4f, "
            "epoch %s) | lr %.3g | %.1f s",
            epoch + 1,
            self.cfg.total_epochs,
            train_loss[0],
            train_acc[0],
            val_loss[0],
            val_acc[0],
            best_acc,
            best_epoch if best_epoch is None else shown_epoch(best_epoch),
            row["learning_rate"],
            elapsed,
        )

    # ------------------------------------------------------------------ evaluation
    def evaluate_split(
        self, sampler: Sampler, desc: str
    ) -> tuple[list[float], list[float], torch.Tensor, torch.Tensor]:
        """Evaluate the fixed tasks ``0..num_evaluation_tasks-1`` of a split.

        Returns per-task losses, per-task accuracies, query probabilities ``[T, Q, N]``
        and query labels ``[T, Q]``.
        """
        n, size = self.cfg.num_evaluation_tasks, self.cfg.batch_size
        losses: list[float] = []
        accs: list[float] = []
        probs: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        bar = progress_bar(total=n, desc=desc, quiet=self.quiet, leave=False, dynamic_ncols=True)
        try:
            for first in range(0, n, size):
                batch = sampler.batch(list(range(first, min(n, first + size))))
                result = self.learner.evaluate(batch.to(self.device))
                losses += _task_losses(result, batch)
                accs += [float(a) for a in result.task_accuracy.reshape(-1)]
                probs.append(result.probabilities.cpu())
                labels.append(batch.query_y.cpu())
                bar.update(len(batch))
                bar.set_postfix(acc=f"{sum(accs) / len(accs):.4f}")
                fault_point("validation" if sampler is self.tasks.val else "test")
                # Between batches, so a stop waits for one batch, not the whole split
                # (Slurm's SIGKILL follows its SIGTERM by ~30 s). Across ranks the flag
                # is agreed in the evaluation's collective, so all of them raise here.
                if self.stop.requested:
                    raise EvaluationStopped
        finally:
            bar.close()
        return losses, accs, torch.cat(probs), torch.cat(labels)

    def validate(self) -> tuple[list[float], list[float]]:
        losses, accs, _, _ = self.evaluate_split(
            self.tasks.val, f"validate {self.progress.epoch + 1}/{self.cfg.total_epochs}"
        )
        return losses, accs

    def evaluate_checkpoint(self, path: Path, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Test-split query probabilities (float64, ``[T, Q, N]``) and labels of the
        weights saved in one checkpoint file; raises :class:`CorruptCheckpointError`.

        One place for how a test-ensemble member is scored, so that tools which score the
        members one by one (``bench/ensemble_members.py``) score exactly what ``test`` does.
        """
        payload = load_checkpoint(path)
        self.learner.load_state_dict(payload["learner"])
        desc = f"test epoch {shown_epoch(epoch)}"
        _, _, probs, labels = self.evaluate_split(self.tasks.test, desc)
        return probs.double(), labels

    def test(self) -> Outcome:
        """Ensemble of the top ``max_models_to_save`` validation checkpoints (mean of
        their per-task query probabilities) and the best single one, on the test tasks.

        Models are loaded from their checkpoint files, never taken from memory, so an
        interrupted and an uninterrupted run test exactly the same weights.
        """
        ranked = self.progress.ranked_epochs()[: self.cfg.max_models_to_save]
        if not ranked:
            raise UserError(
                f"{self.exp.path}: no validated epoch to test (train at least one epoch)"
            )
        if self.barrier is not None:
            self.barrier()  # every rank reads the checkpoints the writer has just saved
        files = self.store.epoch_files()
        used: list[int] = []
        left_out: dict[int, str] = {}  # epoch -> why, for test_summary.json and the log
        summed: torch.Tensor | None = None
        labels: torch.Tensor | None = None
        best_single: dict[str, Any] | None = None
        self.write_state("running", "testing")
        for epoch in ranked:
            if self.stop.requested:
                return self.interrupted(during_test=True)
            ckpt = files.get(epoch)
            if ckpt is None:
                log.warning(
                    "no checkpoint for epoch %d; left out of the test ensemble", shown_epoch(epoch)
                )
                left_out[epoch] = "no checkpoint file"
                continue
            try:
                probs, labels = self.evaluate_checkpoint(ckpt.path, epoch)
            except EvaluationStopped:
                return self.interrupted(during_test=True)
            except CorruptCheckpointError as exc:
                log.warning("%s; epoch %d left out of the test ensemble", exc, shown_epoch(epoch))
                left_out[epoch] = str(exc)
                continue
            summed = probs if summed is None else summed + probs
            used.append(epoch)
            if best_single is None:
                mean, ci = mean_ci95(per_task_accuracy(probs, labels))
                best_single = {
                    "accuracy_mean": mean,
                    "accuracy_ci95": ci,
                    "num_tasks": int(probs.shape[0]),
                    "epoch": epoch,
                }
        if summed is None or labels is None or best_single is None:
            raise UserError(
                f"{self.exp.checkpoints}: none of the best epochs "
                f"{[shown_epoch(e) for e in ranked]} has a loadable "
                "checkpoint to test"
            )
        mean, ci = mean_ci95(per_task_accuracy(summed / len(used), labels))
        summary = {
            "ensemble": {
                "accuracy_mean": mean,
                "accuracy_ci95": ci,
                "num_tasks": int(summed.shape[0]),
                "epochs": used,
                # The ensemble was meant to hold every epoch of `ranked`; these are missing.
                "left_out_epochs": sorted(left_out),
                "left_out_reasons": [left_out[e] for e in sorted(left_out)],
            },
            "best_single": best_single,
            "ci95": "1.96 * sample standard deviation (ddof=1) over tasks / sqrt(num_tasks)",
        }
        if self.is_writer:
            self.exp.write_test_summary(summary)
            self.metrics.add(result_record(self.progress.epoch, self.progress.iteration, summary))
            self.metrics.flush()
            if self.training_complete:  # no more resuming inside an epoch
                self.store.remove_mid_epoch()
        message = (
            f"test accuracy {mean:.4f} ± {ci:.4f} (ensemble of epochs "
            f"{[shown_epoch(e) for e in used]}); best single "
            f"(epoch {shown_epoch(best_single['epoch'])}) {best_single['accuracy_mean']:.4f} ± "
            f"{best_single['accuracy_ci95']:.4f}"
        )
        if left_out:
            message += (
                f"; ENSEMBLE INCOMPLETE: epochs {[shown_epoch(e) for e in sorted(left_out)]} "
                "left out (damaged or "
                f"missing checkpoints), {len(used)} of {len(ranked)} models used"
            )
            log.warning(message)
        else:
            log.info(message)
        self.write_state("done", message, test_accuracy=mean, ensemble_left_out=sorted(left_out))
        return Outcome.DONE


__all__ = ["Builder", "Outcome", "Progress"]
