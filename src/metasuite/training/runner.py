"""Run one experiment: check, lock, decide where to start, hand over to the builder.

Order matters: everything a user can get wrong (config, devices, data set, an
unwritable root) is checked before the experiment folder is touched, so a typo never
leaves a half-made folder or a "failed" state behind. Then, under the folder's lock:
where to start (``continue_from_epoch``), whether the config still matches the run
being resumed, and the builder's loop.

One sequence serves a plain process and each rank of a data-parallel job: a plain
process is a world of size 1 (:mod:`metasuite.training.distributed` supplies the world:
its context, collectives and the learner the builder drives). Rank 0 alone checks,
locks, decides and writes; the decision reaches the other ranks by broadcast.

``continue_from_epoch``:

- ``"from_scratch"`` or ``-1``: start over; the folder's checkpoints, statistics and
  test summary are deleted (with a log line saying how many).
- ``"latest"``: the newest good checkpoint; it is an error if there is none.
- ``-2`` (default): the newest good checkpoint if there is one, else from scratch, so
  re-running the same command resumes.
- ``N >= 0``: the checkpoint at the end of epoch ``N`` (0-based; it must still exist:
  only the best ``max_models_to_save`` epochs and the newest files are kept); later
  checkpoints are deleted, as that run is abandoned.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from metasuite import progress
from metasuite.config import ExperimentConfig, from_dict, training_differences
from metasuite.errors import DatasetError, UserError
from metasuite.fsutil import is_disk_full
from metasuite.training.builder import Builder, Outcome
from metasuite.training.checkpoint import CheckpointStore
from metasuite.training.distributed import (
    SINGLE_PROCESS,
    Alone,
    Collectives,
    DistContext,
    joined,
    rank_device,
    shared,
)
from metasuite.training.experiment_dir import ExperimentDir
from metasuite.training.lock import ExperimentLock
from metasuite.training.manifest import FILE_ONLY, class_split_change, recorded_run
from metasuite.training.runtime import (
    configure,
    execution_changes,
    seed_everything,
)
from metasuite.training.runtime import numerics as numerics_of
from metasuite.training.signals import StopRequest

log = logging.getLogger("metasuite")

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class _TqdmHandler(logging.Handler):
    """Log lines on stderr that do not tear progress bars apart."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, FILE_ONLY, False):
            return  # shown on the console already, as a warning
        try:
            progress.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _LogFile(logging.FileHandler):
    """The experiment's log file; a line lost to a full disk is dropped quietly (the
    write that matters fails too and says "no space left" on one line), not printed
    as logging's "--- Logging error ---" traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        if not is_disk_full(sys.exc_info()[1] or Exception()):
            super().handleError(record)


@contextlib.contextmanager
def logging_to(log_file: Path | None, *, console: bool = True) -> Iterator[None]:
    """Send ``metasuite.*`` log records to the experiment's log file and stderr."""
    logger = logging.getLogger("metasuite")
    handlers: list[logging.Handler] = []
    if console:
        stream = _TqdmHandler()
        stream.setFormatter(logging.Formatter("%(message)s"))
        stream.setLevel(logging.INFO)
        handlers.append(stream)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = _LogFile(log_file, encoding="utf-8")
        to_file.setFormatter(logging.Formatter(LOG_FORMAT))
        to_file.setLevel(logging.DEBUG)
        handlers.append(to_file)
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    for h in handlers:
        logger.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(previous_level)


def check_root_writable(root: Path) -> None:
    """The experiments root must be creatable and writable (one-line error if not)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        # A uniquely named probe: experiments started together (run-suite) share the root.
        with tempfile.TemporaryFile(prefix=".write-test.", dir=root):
            pass
    except OSError as exc:
        raise UserError(f"experiments root {root}: not writable ({exc.strerror or exc})") from None


def recover_from_a_kill(lock: ExperimentLock, store: CheckpointStore) -> None:
    """Once the lock is held: say whose stale lock was taken over, and delete the
    temporary files of a checkpoint save that a kill cut short."""
    if lock.took_over is not None:
        log.warning(
            "took over a stale lock of pid %s on %s (that process is gone)",
            lock.took_over.get("pid", "?"),
            lock.took_over.get("host", "?"),
        )
    leftovers = store.remove_temp_files()
    if leftovers:
        log.info("removed %d unfinished checkpoint files from a killed save", leftovers)


def _wipe(exp: ExperimentDir, store: CheckpointStore) -> None:
    removed = store.remove_all()
    for path in (exp.summary_path, exp.test_summary_path):
        path.unlink(missing_ok=True)
    if removed:
        log.info("starting from scratch: deleted %d old checkpoints", removed)


def resume_differences(payload: dict[str, Any], config: ExperimentConfig, source: str) -> list[str]:
    """Why ``config`` would not continue the run saved in ``payload``: its changed
    training settings (refused without ``--force``). How the run is executed may change:
    :func:`say_execution_changes`."""
    return training_differences(from_dict(payload["config"], source=source), config)


def say_execution_changes(
    payload: dict[str, Any],
    config: ExperimentConfig,
    numerics: dict[str, Any] | None,
    changed: list[str] | None,
) -> None:
    """The one place the resume policy (:func:`~metasuite.training.runtime.execution_changes`)
    is applied to how a run is executed: each change from the checkpoint is said once,
    and appended to ``changed`` for the manifest. A checkpoint from before the numerics
    were recorded is compared on the config's ``backend``."""
    if numerics is None:
        return
    if payload.get("numerics"):
        changes = execution_changes(payload["numerics"], numerics)
    else:
        old = from_dict(payload["config"], source="checkpoint").backend
        changes = [] if old == config.backend else [f"backend: {old} -> {config.backend}"]
    if not changes:
        return
    log.warning(
        "resuming with other execution settings than the checkpoint: %s; they change the "
        "order of float summation, so the results will match an uninterrupted run to float "
        "precision, not bit for bit (recorded in manifest.json)",
        "; ".join(changes),
    )
    if changed is not None:
        changed.extend(changes)


def choose_start(
    config: ExperimentConfig,
    exp: ExperimentDir,
    store: CheckpointStore,
    *,
    force: bool,
    numerics: dict[str, Any] | None = None,
    forced: list[str] | None = None,
    changed: list[str] | None = None,
) -> dict[str, Any] | None:
    """The checkpoint payload to resume from, or None for a fresh start (see module doc).

    ``numerics``: this process's (:func:`~metasuite.training.runtime.numerics`); the
    differences ``force`` overrides are appended to ``forced``, the execution settings
    that changed (:func:`~metasuite.training.runtime.execution_changes`) to ``changed``, for
    the manifest."""
    mode = config.continue_from_epoch
    payload: dict[str, Any] | None = None
    source = ""
    if mode in ("from_scratch", -1):
        _wipe(exp, store)
        return None
    if mode in ("latest", -2):
        found = store.load_latest()
        if found is None:
            if mode == "latest":
                raise UserError(
                    f'continue_from_epoch "latest": no checkpoint in {store.folder} to continue '
                    "from (use -2 to start from scratch when there is none)"
                )
            _wipe(exp, store)
            return None
        ckpt, payload = found
        source = ckpt.path.name
    else:
        ckpt, payload = store.load_epoch(int(mode))
        source = ckpt.path.name
    differences = resume_differences(payload, config, f"{ckpt.path}")
    say_execution_changes(payload, config, numerics, changed)
    if differences:
        listing = "; ".join(differences)
        if forced is not None:
            forced.extend(differences)
        if not force:
            raise UserError(
                f"{exp.path}: the config differs from the run being resumed in training "
                f"settings: {listing}. Use --force to continue anyway, or set "
                'continue_from_epoch to "from_scratch"'
            )
        log.warning("--force: resuming despite config differences: %s", listing)
    if not isinstance(mode, str) and mode >= 0:
        removed = store.remove_newer_than(ckpt.iteration)
        if removed:
            log.info("continuing from epoch %d: deleted %d later checkpoints", mode, len(removed))
        exp.test_summary_path.unlink(missing_ok=True)
    progress = payload["progress"]
    log.info(
        "resuming from %s (%d epochs, %d iterations done)",
        source,
        progress["epoch"],
        progress["iteration"],
    )
    return payload


def run_experiment(
    config: ExperimentConfig,
    root: Path,
    devices: list[torch.device],
    *,
    ctx: DistContext | None = None,
    quiet: bool = False,
    force: bool = False,
    tasks: Any = None,
    builder_class: type[Builder] = Builder,
) -> Outcome:
    """Train (or resume, or only test) one experiment; returns how it ended.

    ``ctx`` is this process's place among torchrun's workers
    (:func:`~metasuite.training.distributed.worker_context`); None, a plain process, is a
    world of size 1. Every rank runs this one sequence: rank 0, the writer (a plain
    process is its own), checks what a user can get wrong, locks the folder, decides
    where to start and hands the decision to the others; every rank then builds the same
    learner and runs its share of the builder's loop; only the writer records the run
    in the manifest and writes files. ``tasks`` may be given (tests); otherwise it is
    built from the config, which is where a missing data set is reported.
    ``builder_class`` lets a benchmark observe the loop (``bench/time_to_accuracy.py``)
    without a second copy of it.
    """
    world = ctx or SINGLE_PROCESS
    device = rank_device(devices, world)
    configure([device])
    exp = ExperimentDir.for_config(root, config)
    with joined(world, device) as comm, contextlib.ExitStack() as stack:
        local_stop = stack.enter_context(StopRequest())
        if world.is_writer:
            try:
                start, tasks, learner = _open_as_writer(
                    config, root, exp, device, comm, stack, quiet=quiet, force=force, tasks=tasks
                )
            except UserError as exc:
                comm.broadcast_object({"error": str(exc)})
                raise
            comm.broadcast_object(start)
        else:
            stack.enter_context(_silenced())
            start = comm.broadcast_object(None)
            if "error" in start:
                raise UserError(f"rank {world.rank}: rank 0 stopped: {start['error']}")
            if tasks is None:
                tasks = _tasks(config, quiet=True, experiment=exp.path)
            learner = _learner(config, device, tasks)
        if start["done"]:
            log.info("experiment already done; test results in %s", exp.test_summary_path)
            return Outcome.DONE

        numerics = numerics_of(learner.backend, config.precision, device, world.world_size)
        backbone = learner.net.describe()
        learner, stop = shared(learner, local_stop, comm)
        builder = builder_class(
            config,
            learner,
            tasks,
            exp,
            device=device,
            stop=stop,
            quiet=quiet or not world.is_writer,
            rank=world.rank,
            world_size=world.world_size,
            sync_gradients=comm.all_reduce_sum_,
            is_writer=world.is_writer,
            barrier=comm.barrier,
            numerics=numerics,
        )
        payload = start["payload"]
        if payload is not None:
            builder.restore(payload)
        if not world.is_writer:
            return builder.test() if config.evaluate_on_test_set_only else builder.run()
        # What the manifest records: each CPU process, or this rank's GPU.
        used = [device] * world.world_size if device.type == "cpu" else [device]
        return _recorded(
            builder,
            payload,
            devices=used,
            tasks=tasks,
            forced=start["forced"],
            changed=start["changed"],
            backbone=backbone,
        )


def _tasks(config: ExperimentConfig, *, quiet: bool, experiment: Path) -> Any:
    from metasuite.data.tasks import FewShotTasks

    return FewShotTasks.from_config(config, quiet=quiet, experiment=experiment)


def _learner(config: ExperimentConfig, device: torch.device, tasks: Any) -> Any:
    """The learner, seeded so that a fresh start is reproducible (a resume overwrites
    it all); the same on every rank. ``tasks`` gives the training split's label count
    to the learners that classify every training class (the baselines)."""
    from metasuite.learner.learners import build_learner

    seed_everything(config.train_seed)
    return build_learner(config, device, num_labels=getattr(tasks.train, "num_labels", None))


def _open_as_writer(
    config: ExperimentConfig,
    root: Path,
    exp: ExperimentDir,
    device: torch.device,
    comm: Collectives | Alone,
    stack: contextlib.ExitStack,
    *,
    quiet: bool,
    force: bool,
    tasks: Any,
) -> tuple[dict[str, Any], Any, Any]:
    """The writer's start: checks, then the folder, its log and lock (held on ``stack``),
    then where to start; returns ``({"payload", "done"}, tasks, learner)``."""
    check_root_writable(root)
    if tasks is None:
        tasks = _tasks(config, quiet=quiet, experiment=exp.path)
    # Built before the folder is touched: a setting the learner refuses is a user error.
    learner = _learner(config, device, tasks)
    numerics = numerics_of(learner.backend, config.precision, device, comm.ctx.world_size)
    store = CheckpointStore(exp.checkpoints)
    if not exp.path.exists():
        # Nothing to resume or test yet: a start that needs a checkpoint (a test-only
        # run, "latest", an epoch number) fails here, before the folder exists, instead
        # of leaving an empty folder that status lists as "not started".
        _decide_start(config, exp, store, force=force, numerics=numerics)
    exp.create()
    lock = ExperimentLock(exp.path)
    stack.enter_context(logging_to(exp.log_file))
    stack.enter_context(lock.hold())
    recover_from_a_kill(lock, store)
    where = f"{device}"
    if comm.ctx.world_size > 1:
        where = f"{comm.ctx.world_size} processes ({device}, {comm.backend})"
    log.info("experiment %s in %s on %s", config.experiment_name, exp.path, where)
    payload, forced, changed = _decide_start(config, exp, store, force=force, numerics=numerics)
    if payload is not None:
        _check_same_classes(exp, tasks, force=force, forced=forced)
    start = {"payload": payload, "done": False, "forced": forced, "changed": changed}
    if config.evaluate_on_test_set_only:
        log.info("evaluate_on_test_set_only: testing checkpoints of %s", exp.path)
        return start, tasks, learner
    start["done"] = payload is not None and _already_done(exp, payload, config)
    return start, tasks, learner


def _check_same_classes(exp: ExperimentDir, tasks: Any, *, force: bool, forced: list[str]) -> None:
    """A resume must find the classes the run began with (class folders added or removed
    change the split and every task): refused unless ``force``, which is recorded."""
    change = class_split_change(exp.path, tasks)
    if change is None:
        return
    if not force:
        raise DatasetError(
            f"{exp.path}: the data set's classes differ from those of the run being resumed "
            f"({change}, recorded in manifest.json): a class folder added or removed changes "
            "every task; restore the data set, start from scratch (continue_from_epoch "
            '"from_scratch") or use --force'
        )
    log.warning("--force: resuming on other classes than the run began with (%s)", change)
    forced.append(change)


def _decide_start(
    config: ExperimentConfig,
    exp: ExperimentDir,
    store: CheckpointStore,
    *,
    force: bool,
    numerics: dict[str, Any],
) -> tuple[dict[str, Any] | None, list[str], list[str]]:
    """The payload to start from, the differences ``force`` let through and the
    execution settings that changed (:func:`~metasuite.training.runtime.execution_changes`)."""
    forced: list[str] = []
    changed: list[str] = []
    if config.evaluate_on_test_set_only:
        payload = checkpoint_to_test(
            config, exp, store, force=force, numerics=numerics, changed=changed
        )
        return payload, forced, changed
    payload = choose_start(
        config, exp, store, force=force, numerics=numerics, forced=forced, changed=changed
    )
    return payload, forced, changed


def _recorded(
    builder: Builder,
    payload: dict[str, Any] | None,
    *,
    devices: list[torch.device],
    tasks: Any,
    forced: list[str],
    changed: list[str],
    backbone: dict[str, Any],
) -> Outcome:
    """The writer's part of the loop (restored from ``payload`` already, if any) as one
    run of the manifest: the test alone (evaluate_on_test_set_only), or training.

    A resumed run tests again at its end, so an older test summary is removed first.
    """
    exp, config = builder.exp, builder.cfg
    keep = getattr(tasks, "save_artifacts", None)  # text: the tokenizer, beside the config
    if keep is not None:
        keep(exp.path)
    if config.evaluate_on_test_set_only:
        with recorded_run(
            exp.path,
            config,
            devices=devices,
            tasks=tasks,
            numerics=builder.numerics,
            execution_changes=changed,
            backbone=backbone,
        ) as run:
            return run.ended_with(builder.test())
    if payload is not None:
        exp.test_summary_path.unlink(missing_ok=True)
    exp.write_config(config)
    exp.write_summary(builder.progress.rows)
    resumed = None if payload is None else payload["progress"]
    with recorded_run(
        exp.path,
        config,
        devices=devices,
        tasks=tasks,
        resumed_from=resumed,
        numerics=builder.numerics,
        forced_differences=forced,
        execution_changes=changed,
        backbone=backbone,
    ) as run:
        return run.ended_with(builder.run())


class _DropRecords(logging.Handler):
    """Ranks other than the writer stay silent: rank 0 speaks for the job."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    logger = logging.getLogger("metasuite")
    handler = _DropRecords()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _already_done(exp: ExperimentDir, payload: dict[str, Any], config: ExperimentConfig) -> bool:
    state = exp.read_state() or {}
    return (
        payload["progress"]["epoch"] >= config.total_epochs
        and state.get("status") == "done"
        and exp.read_test_summary() is not None
    )


def checkpoint_to_test(
    config: ExperimentConfig,
    exp: ExperimentDir,
    store: CheckpointStore,
    *,
    force: bool,
    numerics: dict[str, Any] | None = None,
    changed: list[str] | None = None,
) -> dict[str, Any]:
    """evaluate_on_test_set_only: the newest checkpoint, whose training settings must
    match ``config`` (unless ``force``); a user error when nothing was trained yet."""
    found = store.load_latest()
    if found is None:
        raise UserError(f"evaluate_on_test_set_only: no checkpoints in {store.folder}; train first")
    ckpt, payload = found
    differences = resume_differences(payload, config, str(ckpt.path))
    say_execution_changes(payload, config, numerics, changed)
    if differences and not force:
        raise UserError(
            f"{exp.path}: the config differs from the trained run in: "
            f"{'; '.join(differences)}. Use --force to test anyway"
        )
    return payload


__all__ = [
    "check_root_writable",
    "checkpoint_to_test",
    "choose_start",
    "logging_to",
    "recover_from_a_kill",
    "run_experiment",
]
