"""Data-parallel meta-training: one process per device, torch.distributed between them.

What is split and what is shared:

- A meta-batch's tasks are split across ranks: rank ``r`` of ``W`` trains slots
  ``r, r+W, ...`` (the builder's ``rank_slots``); task indices stay
  ``iteration * batch_size + slot``, so the task set does not depend on ``W``.
- Each rank divides its loss by the whole meta-batch size (``total_tasks``), the
  meta-gradients are all-reduced (SUM) and every rank takes the same Adam step, so the
  ranks hold identical learners and match a single process up to float summation order.
- Batch-norm running statistics are folded in task order from the records of *all*
  tasks (an all-gather), so they match a single process too.
- Validation and test tasks are split the same way and the per-task results gathered.
- Training metrics are summed across ranks; only rank 0 writes logs, checkpoints and
  state. Resuming reads a checkpoint that holds no trace of the number of ranks, so it
  works with another number of processes.
- A stop signal seen by any rank is agreed on at the next collective, so every rank
  stops after the same meta-iteration and rank 0's checkpoint covers it.

Every rank runs the one start-up sequence, :func:`metasuite.training.runner.run_experiment`;
this module holds what differs between ranks and what they exchange. A plain process
is a world of size 1 (:data:`SINGLE_PROCESS`), whose collectives (:class:`Alone`) are
the identity, so the same sequence serves it. This module never imports the runner.

Launching: ``metasuite train --gpus 0,1`` (or ``--gpus cpu --nproc 2``) runs
:func:`launch`, which starts torchrun (``python -m torch.distributed.run --standalone``)
in a session of its own. torchrun cannot carry ``metasuite train``'s exit codes (any
non-zero worker exit becomes 1) and reacts to SIGTERM by terminating the workers a
second time, which would cut a checkpoint short. So the launcher forwards one SIGTERM
straight to the workers, and rank 0 records its exit status (3 paused, 4 stopped, ...)
in a file that the launcher returns. Workers started by a bare ``torchrun ... -m
metasuite train`` work as well, only with torchrun's exit status.

Several nodes (``--nnodes``, or Slurm's environment: :mod:`metasuite.training.nodes`):
one launcher per node, each starting torchrun with a c10d rendezvous instead of
``--standalone``. The first worker of every node records the status as rank 0 does
(the ranks agree on how a run ends), so every node's launcher returns the job's
status and ``srun`` its highest. Until the rendezvous forms the launcher holds
torchrun's output back; if it does not form within ``$METASUITE_RDZV_TIMEOUT_S`` no
worker ever started, nothing was written, and the launcher says so in one line
(a :class:`UserError`, exit 2) instead of torchrun's tracebacks.

A rank that dies takes the job down: torchrun sees the dead worker and terminates the
others (SIGTERM, SIGKILL 30 s later), and a rank blocked in a collective with a dead
peer gets an error from gloo at once, or after ``$METASUITE_DIST_TIMEOUT_S`` (default
600 s) at worst. Re-running resumes from rank 0's last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from metasuite.errors import EnvironmentFault, ExitCode, UserError
from metasuite.training.nodes import (
    ONE_NODE,
    RDZV_TIMEOUT_ENV,
    Nodes,
    check_host_resolves,
    rdzv_timeout_seconds,
    torchrun_options,
)
from metasuite.training.signals import parent_death_signal

LAUNCH_DIR_ENV = "METASUITE_LAUNCH_DIR"
"""Folder shared by the launcher and its workers (worker pids, rank 0's exit status)."""
TIMEOUT_ENV = "METASUITE_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600
OUTCOME_FILE = "outcome"


# ---------------------------------------------------------------------- the process


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the workers (from torchrun's environment)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1)
"""A plain process: a world of size 1, its own writer."""


def worker_context(environ: dict[str, str] | None = None) -> DistContext | None:
    """The context of a torchrun worker, or None for a plain single process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        ctx = DistContext(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])),
        )
    except ValueError:
        raise UserError(
            f"RANK/WORLD_SIZE in the environment are not integers ({env.get('RANK')!r}, "
            f"{env.get('WORLD_SIZE')!r})"
        ) from None
    return ctx if ctx.world_size > 1 else None


def check_world_fits(batch_size: int, world_size: int, source: str) -> None:
    """Refuse a world larger than the meta-batch, before anything starts.

    Each rank trains its share of a meta-batch's ``batch_size`` tasks; a rank with no
    task would have nothing to contribute yet still wait in every collective, so the
    only honest answers are fewer processes or a bigger batch (which changes results).
    """
    if world_size > batch_size:
        raise UserError(
            f"{world_size} processes but batch_size is {batch_size} in {source}: each "
            f"process needs at least one task of the meta-batch; use at most {batch_size} "
            "processes"
        )


def rank_device(devices: Sequence[torch.device], ctx: DistContext) -> torch.device:
    """This rank's device: the CPU, or the GPU of its local rank (one GPU per process)."""
    if all(d.type == "cpu" for d in devices):
        return torch.device("cpu")
    if len(devices) != ctx.local_world_size:
        raise UserError(
            f"--gpus names {len(devices)} GPUs but {ctx.local_world_size} processes run on "
            "this machine; give one GPU per process"
        )
    return devices[ctx.local_rank]


def timeout_seconds() -> int:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"${TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return value


def record_pid(ctx: DistContext) -> None:
    """Tell the launcher which process to signal (see :func:`launch`)."""
    folder = os.environ.get(LAUNCH_DIR_ENV)
    if folder:
        Path(folder, f"pid.{ctx.rank}").write_text(str(os.getpid()))


def record_outcome(ctx: DistContext, code: int) -> bool:
    """The first worker of each node (rank 0 among them) leaves its exit status for its
    node's launcher; True if there is a launcher. The ranks agree on how a run ends
    (done, paused at the same epoch, stopped after the same meta-iteration, rank 0's
    user error passed to all), so every node's launcher returns the job's status."""
    folder = os.environ.get(LAUNCH_DIR_ENV)
    if not folder:
        return False
    if ctx.local_rank == 0:
        Path(folder, OUTCOME_FILE).write_text(str(int(code)))
    return True


ERROR_FILE_PREFIX = "error."
"""``error.<rank>``: the one-line message of a user error (or environment fault) a worker
ended with, for its node's launcher to print once, in place of torchrun's traceback."""


def record_error(ctx: DistContext, exc: UserError) -> bool:
    """Leave ``exc``'s line and exit status for this node's launcher; True if there is
    one (the worker then ends quietly with status 0, so torchrun reports no failure and
    the launcher says it once, as a single process would)."""
    folder = os.environ.get(LAUNCH_DIR_ENV)
    if not folder:
        return False
    Path(folder, f"{ERROR_FILE_PREFIX}{ctx.rank}").write_text(str(exc))
    record_outcome(ctx, exc.exit_code)
    return True


def _recorded_error(folder: Path, code: int) -> UserError | None:
    """The first rank's recorded error as the exception a single process would raise."""
    ranked = []
    for path in folder.glob(f"{ERROR_FILE_PREFIX}*"):
        with contextlib.suppress(OSError, ValueError):
            ranked.append((int(path.name.removeprefix(ERROR_FILE_PREFIX)), path.read_text()))
    if not ranked:
        return None
    error = (
        EnvironmentFault(min(ranked)[1]) if code == ExitCode.FAILED else UserError(min(ranked)[1])
    )
    error.exit_code = code
    return error


# ---------------------------------------------------------------------- collectives


class Collectives:
    """The few collective operations meta-training needs, over one process group."""

    def __init__(self, ctx: DistContext, device: torch.device) -> None:
        self.ctx = ctx
        self.device = device
        self.backend = "nccl" if device.type == "cuda" else "gloo"

    @classmethod
    def init(cls, ctx: DistContext, device: torch.device) -> Collectives:
        """Join the process group (torchrun's rendezvous variables say where)."""
        if device.type == "cuda":
            torch.cuda.set_device(device)
        comm = cls(ctx, device)
        dist.init_process_group(
            comm.backend,
            rank=ctx.rank,
            world_size=ctx.world_size,
            timeout=timedelta(seconds=timeout_seconds()),
        )
        return comm

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def all_reduce_sum_(self, tensors: list[torch.Tensor]) -> None:
        """Sum a list of tensors over the ranks in place, as one flat collective."""
        if not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n

    def sum_floats(self, values: Sequence[float]) -> list[float]:
        flat = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        return [float(v) for v in flat.cpu()]

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()


class Alone:
    """The collectives the start-up path uses, for a world of size 1: there is no one to
    exchange with, so each is the identity and no process group is joined. (The
    learner's collectives are not needed: :func:`shared` leaves a lone learner as it is.)"""

    backend = "none"

    def __init__(self, device: torch.device) -> None:
        self.ctx = SINGLE_PROCESS
        self.device = device

    def all_reduce_sum_(self, tensors: list[torch.Tensor]) -> None:
        pass

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def barrier(self) -> None:
        pass


@contextlib.contextmanager
def joined(ctx: DistContext, device: torch.device) -> Iterator[Collectives | Alone]:
    """This process's collectives for the length of a run.

    A world of several tells the launcher this worker's pid (:func:`launch`), joins
    torchrun's process group and leaves it at the end; a world of one joins nothing.
    """
    if ctx.world_size == 1:
        yield Alone(device)
        return
    record_pid(ctx)
    comm = Collectives.init(ctx, device)
    try:
        yield comm
    finally:
        comm.close()


def slot_order(parts: Sequence[Sequence[Any]]) -> list[Any]:
    """Interleave per-rank lists back into meta-batch order.

    Rank ``r`` of ``W`` holds slots ``r, r+W, ...``, so slot ``b`` is item ``b // W``
    of rank ``b % W``.
    """
    world = len(parts)
    total = sum(len(p) for p in parts)
    return [parts[b % world][b // world] for b in range(total)]


def _to(obj: Any, device: torch.device) -> Any:
    """Move every tensor inside nested lists/tuples to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, list | tuple):
        return type(obj)(_to(o, device) for o in obj)
    return obj


# ---------------------------------------------------------------------- the learner


class AgreedStop:
    """A stop request that every rank sees at the same point of the loop.

    The builder polls ``requested``; it only changes when the ranks exchange their
    local flags (in every training and evaluation collective), so all ranks stop after
    the same meta-iteration.
    """

    def __init__(self, local: Any) -> None:
        self.local = local
        self._agreed = False

    @property
    def requested(self) -> bool:
        return self._agreed

    @property
    def signal_name(self) -> str:
        return self.local.signal_name or "a signal to another rank"

    @property
    def local_flag(self) -> float:
        return 1.0 if self.local.requested else 0.0

    def agree(self, any_rank_stopping: bool) -> None:
        self._agreed = self._agreed or any_rank_stopping


class DistributedLearner:
    """A learner (``MamlSystem``) whose steps are collective across the ranks.

    ``train_step`` gets this rank's share of a meta-batch from the builder and returns
    the metrics of the whole meta-batch; ``evaluate`` gets the whole evaluation batch on
    every rank, adapts to this rank's share and returns everyone's results in order.
    """

    def __init__(self, learner: Any, comm: Collectives, stop: AgreedStop) -> None:
        self.learner = learner
        self.comm = comm
        self.stop = stop

    def _sync_stats(self, records: list[Any]) -> list[Any]:
        parts = self.comm.all_gather_object(_to(records, torch.device("cpu")))
        return _to(slot_order(parts), self.learner.device)

    def train_step(
        self,
        batch: Any,
        epoch: int,
        *,
        total_tasks: int | None = None,
        sync_gradients: Any = None,
    ) -> dict[str, float]:
        n = len(batch)
        metrics = self.learner.train_step(
            batch,
            epoch,
            total_tasks=total_tasks,
            sync_gradients=sync_gradients,
            sync_stats=self._sync_stats,
        )
        loss, acc, count, stopping = self.comm.sum_floats(
            [metrics["loss"] * n, metrics["accuracy"] * n, n, self.stop.local_flag]
        )
        self.stop.agree(stopping > 0)
        return {**metrics, "loss": loss / count, "accuracy": acc / count}

    def evaluate(self, batch: Any) -> Any:
        from metasuite.learner.system import EvalResult

        rank, world = self.comm.ctx.rank, self.comm.ctx.world_size
        rows = list(range(rank, len(batch), world))
        part: dict[str, Any] = {"stop": self.stop.local_flag, "n": len(rows)}
        if rows:
            result = self.learner.evaluate(batch.select(rows))
            part.update(
                loss_sum=result.loss * len(rows),
                accuracy=list(result.task_accuracy.cpu()),
                probabilities=list(result.probabilities.cpu()),
            )
        parts = self.comm.all_gather_object(part)
        self.stop.agree(any(p["stop"] > 0 for p in parts))
        # A rank with no task (a last batch smaller than the world) sent empty lists.
        task_accuracy = torch.stack(slot_order([p.get("accuracy", []) for p in parts]))
        probabilities = torch.stack(slot_order([p.get("probabilities", []) for p in parts]))
        total = sum(p["n"] for p in parts)
        return EvalResult(
            loss=sum(p.get("loss_sum", 0.0) for p in parts) / total,
            accuracy=float(task_accuracy.mean()),
            task_accuracy=task_accuracy,
            probabilities=probabilities,
        )

    def state_dict(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state)


def shared(learner: Any, stop: Any, comm: Collectives | Alone) -> tuple[Any, Any]:
    """The learner and stop request the builder drives: in a world of one, ``learner`` and
    ``stop`` themselves (nothing to agree on, so the steps are exactly a plain process's);
    across several, a :class:`DistributedLearner` and an :class:`AgreedStop`."""
    if comm.ctx.world_size == 1:
        return learner, stop
    agreed = AgreedStop(stop)
    return DistributedLearner(learner, comm, agreed), agreed


# ---------------------------------------------------------------------- the launcher


def _worker_pids(folder: Path) -> list[int]:
    pids = []
    for path in folder.glob("pid.*"):
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(path.read_text()))
    return pids


def _stopped_during_start_up() -> bool:
    """A SIGTERM that ``metasuite.cli.EarlyStop`` recorded before the workers exist: stop
    without starting them (exit 4, as any stop), instead of losing the signal."""
    name = getattr(signal.getsignal(signal.SIGTERM), "signal_name", None)
    if name:
        print(
            f"stopped by {name} during start-up, before the workers started; run the same "
            "command to continue",
            file=sys.stderr,
        )
    return bool(name)


def launch(
    worker_argv: Sequence[str],
    nproc: int,
    nodes: Nodes = ONE_NODE,
    rdzv_id: str = "metasuite",
) -> int:
    """Run ``metasuite train <worker_argv>`` on ``nproc`` processes under torchrun, on this
    node of ``nodes`` (one node: ``--standalone``; several: a c10d rendezvous at
    ``nodes.endpoint``, see :mod:`metasuite.training.nodes`).

    Returns the exit status the workers of this node recorded (0 done, 2 user error,
    3 paused, 4 stopped by a signal: every rank agrees on them, so every node's launcher
    returns the job's status), else torchrun's. The first SIGTERM/SIGINT is passed to the
    workers once (they checkpoint and stop); a second one kills the whole job. Several
    nodes: a rendezvous that does not form within ``$METASUITE_RDZV_TIMEOUT_S`` is one
    :class:`UserError` naming the endpoint (torchrun's own output of it is held back), and
    no worker has started, so nothing was written.
    """
    # Checked here too, so a bad value is one error line, not one per worker + torchrun's.
    timeout_seconds()
    if _stopped_during_start_up():
        return ExitCode.STOPPED
    multi = nodes.count > 1
    rdzv_timeout = rdzv_timeout_seconds() if multi else 0
    check_host_resolves(nodes)
    with tempfile.TemporaryDirectory(prefix="metasuite-launch-") as tmp:
        folder = Path(tmp)
        env = dict(os.environ, **{LAUNCH_DIR_ENV: tmp})
        if nproc > 1:
            # What torchrun sets itself when it is unset, minus its banner saying so: the
            # job's stderr is the workers' lines and the launcher's, nothing else.
            env.setdefault("OMP_NUM_THREADS", "1")
        command = [
            sys.executable, "-m", "torch.distributed.run",
            *torchrun_options(nodes, rdzv_id, rdzv_timeout),
            f"--nproc-per-node={nproc}", "--max-restarts=0",
            "-m", "metasuite", "train", *worker_argv,
        ]  # fmt: skip
        # A session of its own: a Ctrl-C in the terminal reaches the launcher only, so
        # the workers get exactly one stop signal (from us), not one from the terminal
        # and a second one from torchrun.
        proc = subprocess.Popen(
            command,
            env=env,
            start_new_session=True,
            preexec_fn=parent_death_signal(),
            stderr=subprocess.PIPE if multi else None,
        )
        held = _HeldOutput(proc.stderr) if multi else None
        signals_seen = 0

        def forward(signum: int, frame: object) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen > 1:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return
            targets = _worker_pids(folder) or [proc.pid]
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        if getattr(previous[signal.SIGTERM], "signal_name", None):
            forward(signal.SIGTERM, None)  # arrived while the workers were being started
        try:
            if held is None:
                code = proc.wait()
            else:
                code = _wait_for_rendezvous(proc, folder, held, rdzv_timeout)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if held is not None:
            held.close()
            if not held.released and not signals_seen:
                raise UserError(
                    f"the rendezvous of {nodes.count} nodes at {nodes.endpoint} did not form "
                    f"within {rdzv_timeout} s (${RDZV_TIMEOUT_ENV}; node rank {nodes.rank}, "
                    f"from {nodes.source}): {held.reason(code)}"
                )
        outcome = folder / OUTCOME_FILE
        if outcome.exists():
            with contextlib.suppress(ValueError):
                recorded = int(outcome.read_text())
                error = _recorded_error(folder, recorded)
                if error is not None:
                    raise error
                return recorded
        return code if code >= 0 else 128 - code


RDZV_GRACE_S = 15
"""How long past ``$METASUITE_RDZV_TIMEOUT_S`` the launcher waits for torchrun to give up
on a rendezvous itself before it ends torchrun (a backstop for a store that hangs)."""


def _wait_for_rendezvous(
    proc: subprocess.Popen[bytes], folder: Path, held: _HeldOutput, timeout_s: int
) -> int:
    """Wait for torchrun; release its held output once workers run (the rendezvous
    formed), and end it if they have not started ``timeout_s`` (+ grace) from now."""
    deadline = time.monotonic() + timeout_s + RDZV_GRACE_S
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=0.2)
        if held.released:
            continue
        if _worker_pids(folder) or _has_children(proc.pid):
            held.release()
        elif time.monotonic() > deadline:
            held.note(f"no rendezvous after {timeout_s + RDZV_GRACE_S} s; torchrun ended")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def _has_children(pid: int) -> bool:
    """True once torchrun has started its workers (it has none while it waits to meet)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        with contextlib.suppress(OSError):
            if (task / "children").read_text().split():
                return True
    return False


class _HeldOutput:
    """torchrun's stderr, held back until the rendezvous forms, then passed through.

    A rendezvous that fails makes torchrun print pages of traceback; the launcher says
    it in one line instead (:meth:`reason` picks the cause out of the held text).
    """

    REASONS = (
        ("address already in use", "the port is in use on this host"),
        ("eaddrinuse", "the port is in use on this host"),
        ("connection refused", "nothing listens there (wrong host or port?)"),
        ("name or service not known", "the host name is unknown"),
        ("no address associated", "the host name is unknown"),
        ("rendezvoustimeouterror", "not every node arrived"),
        ("timed out", "timed out"),
        ("timeout", "timed out"),
    )

    def __init__(self, stream: Any) -> None:
        self._fd = stream.fileno()
        self._stream = stream
        self._lock = threading.Lock()
        self._held: list[bytes] = []
        self._notes: list[str] = []
        self.released = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                if self.released:
                    _write_stderr(chunk)
                else:
                    self._held.append(chunk)

    def release(self) -> None:
        with self._lock:
            self.released = True
            _write_stderr(b"".join(self._held))
            self._held.clear()

    def note(self, text: str) -> None:
        self._notes.append(text)

    def close(self) -> None:
        self._thread.join(timeout=10)
        self._stream.close()

    def reason(self, code: int) -> str:
        if self._notes:
            return self._notes[-1]
        text = b"".join(self._held).decode(errors="replace").lower()
        for needle, why in self.REASONS:
            if needle in text:
                return why
        return f"torchrun exited with status {code} before starting any worker"


def _write_stderr(data: bytes) -> None:
    if data:
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()


__all__ = [
    "SINGLE_PROCESS",
    "AgreedStop",
    "Alone",
    "Collectives",
    "DistContext",
    "DistributedLearner",
    "check_world_fits",
    "joined",
    "launch",
    "rank_device",
    "record_outcome",
    "shared",
    "slot_order",
    "worker_context",
]
