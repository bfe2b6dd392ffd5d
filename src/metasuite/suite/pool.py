"""Run a suite's experiment scripts on a pool of devices, one experiment per device slot.

Each slot (one GPU, a group of ``--per-experiment`` GPUs, or one CPU job) runs one
experiment script at a time as a child process in its own session, with its output in
``<experiments root>/<name>/logs/run_suite.log``. Progress lives in the experiment
folders, not here: an experiment whose ``state.json`` says "done" is skipped, and
everything else is started, which resumes it from its last checkpoint (the builder
does that). So killing ``run-suite`` and starting it again picks up where it stopped,
with nothing to reconcile.

Exit statuses of ``metasuite train`` (docs/DESIGN.md) drive the pool: 3 (paused by
``total_epochs_before_pause``) runs the experiment again at once, as long as it makes
progress; 0 is done; anything else is a failure, reported at the end while the pool
goes on with the rest. SIGINT/SIGTERM to ``run-suite`` is forwarded as SIGTERM to every
running experiment (each checkpoints and exits 4) and no new one is started. On Linux a
child also gets SIGTERM if ``run-suite`` itself dies without a chance to forward it.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from metasuite.errors import RESUMABLE_EXIT_CODES, ExitCode, UserError
from metasuite.text import plural
from metasuite.training.devices import CPU, DeviceSpecError, parse_devices
from metasuite.training.experiment_dir import ExperimentDir
from metasuite.training.lock import ExperimentLock, pid_alive
from metasuite.training.signals import parent_death_signal

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Job:
    """One experiment to run: its name (= folder name) and its generated script."""

    name: str
    script: Path


@dataclass(frozen=True)
class Slot:
    """Where one experiment runs: the script's device arguments (``("0",)``, ``("cpu",)``)."""

    devices: tuple[str, ...]

    @property
    def label(self) -> str:
        return "cpu" if self.devices == ("cpu",) else "gpu " + ",".join(self.devices)


def make_slots(gpus: Sequence[str], per_experiment: int = 1, jobs: int = 1) -> list[Slot]:
    """``["cpu"]`` → ``jobs`` CPU slots; GPU ids → groups of ``per_experiment`` ids.

    Raises ValueError with a user-facing message; the command turns it into a UserError.
    """
    if per_experiment < 1:
        raise ValueError(f"--per-experiment must be >= 1, got {per_experiment}")
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    # The grammar the experiment script applies: "01" or "1000" would fail every experiment.
    try:
        devices = parse_devices(gpus) if gpus else None
    except DeviceSpecError as exc:
        if exc.problem == "twice":
            raise ValueError(f"--gpus {' '.join(gpus)}: a GPU id is listed twice") from None
        devices = None
    if devices is None:
        raise ValueError(f"--gpus {' '.join(gpus)}: expected GPU ids such as 0 1 2 3, or cpu")
    if devices == (CPU,):
        if per_experiment != 1:
            raise ValueError("--per-experiment applies to GPUs; on the CPU use --jobs")
        return [Slot((CPU,)) for _ in range(jobs)]
    if jobs != 1:
        raise ValueError("--jobs applies to the CPU; on GPUs each slot runs one experiment")
    if len(gpus) % per_experiment:
        raise ValueError(
            f"--per-experiment {per_experiment} does not divide the "
            f"{plural(len(gpus), 'GPU')} given"
        )
    return [Slot(tuple(gpus[i : i + per_experiment])) for i in range(0, len(gpus), per_experiment)]


def running_elsewhere(state: Mapping[str, Any] | None) -> int | None:
    """The pid of a live process of this host that holds the experiment, if any."""
    if not state or state.get("status") != "running":
        return None
    if state.get("host") != socket.gethostname() or state.get("pid") == os.getpid():
        return None
    return state["pid"] if pid_alive(state.get("pid")) else None


THREADS_ENV = "METASUITE_NUM_THREADS"
"""= metasuite.training.runtime.THREADS_ENV, named here so that the pool's commands do
not import torch."""


def share_cpu_threads(env: dict[str, str], slots: Sequence[Slot]) -> None:
    """Several experiments at once on the CPU share its cores: cores // jobs intra-op
    threads each, unless ``$METASUITE_NUM_THREADS`` is set already (one experiment keeps
    torch's default)."""
    if slots and slots[0].devices == ("cpu",) and len(slots) > 1:
        env.setdefault(THREADS_ENV, str(max(1, (os.cpu_count() or 1) // len(slots))))


@dataclass
class Result:
    """How one experiment ended in this run of the pool."""

    name: str
    status: str  # "done", "pruned", "skipped", "failed", "stopped", "running elsewhere"
    exit_code: int | None = None
    message: str = ""
    log: Path | None = None
    runs: int = 0


@dataclass
class _Running:
    job: Job
    slot: Slot
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    epoch_before: int
    runs: int


def _last_line(path: Path) -> str:
    """The last non-empty line of a log: usually the one-line error."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class StopFlag:
    """Set by SIGINT/SIGTERM; the pool forwards it to the experiments and winds down."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting
        self.signum = signum


RUNNER_LOCKS = ".run_suite"
"""Folder under the experiments root holding one lock folder per suite being run."""


@contextlib.contextmanager
def one_runner(experiments_root: Path, suite_path: Path) -> Iterator[None]:
    """Hold the lock of (suite, experiments root) for the block, or raise one line.

    Two pools on one suite would start the same experiments at the same moment: one
    training wins the experiment's own lock, the other's exits 2 and is reported as a
    failure whose "reason" is the winner's output in the shared ``run_suite.log``. The
    second ``run-suite`` is therefore refused up front, by the experiment lock's own
    mechanism (owner pid, host and start time; a dead owner's lock is taken over).
    """
    suite_path = Path(suite_path).resolve()
    key = hashlib.sha256(str(suite_path).encode()).hexdigest()[:12]
    lock = ExperimentLock(experiments_root / RUNNER_LOCKS / f"{suite_path.stem}-{key}")
    try:
        lock.acquire()
    except UserError:
        owner = lock.owner() or {}
        raise UserError(
            f"another run-suite (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, "
            f"since {owner.get('since', '?')}) is running {suite_path} on "
            f"{experiments_root}; wait for it or stop it (its lock: {lock.path})"
        ) from None
    try:
        yield
    finally:
        lock.release()


class Pool:
    """The device pool. ``run()`` returns one :class:`Result` per job, in job order."""

    def __init__(
        self,
        jobs: Sequence[Job],
        slots: Sequence[Slot],
        experiments_root: Path,
        *,
        env: Mapping[str, str] | None = None,
        train_args: Sequence[str] = ("--quiet",),
        stop: StopFlag | None = None,
        report: Callable[[str], None] = print,
        on_finish: Callable[[Result], None] | None = None,
        more_jobs: Callable[[], Job | None] | None = None,
        on_tick: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        """``more_jobs`` (a search's driver) is asked for another job whenever a slot is
        free and ``jobs`` are used up; None means it has no more. ``on_tick`` is called
        with the names of the running jobs at every poll (to watch their progress)."""
        if not slots:
            raise ValueError("a pool needs at least one slot")
        self.jobs = list(jobs)
        self.slots = list(slots)
        self.root = experiments_root
        self.env = dict(os.environ if env is None else env)
        self.train_args = list(train_args)
        self.stop = stop or StopFlag()
        self.report = report
        self.on_finish = on_finish
        self.more_jobs = more_jobs
        self.on_tick = on_tick
        self.results: dict[str, Result] = {}
        self._preexec = parent_death_signal()

    # -------------------------------------------------------------------- launching
    def _launch(self, job: Job, slot: Slot, runs: int) -> _Running:
        folder = self.root / job.name
        log_path = folder / "logs" / "run_suite.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n=== run-suite {now}: {job.script} on {slot.label} ===\n".encode())
        log.flush()
        state = ExperimentDir(folder).read_state() or {}
        epoch = state.get("epoch") if isinstance(state.get("epoch"), int) else 0
        cmd = ["bash", str(job.script), *slot.devices, "--", *self.train_args]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # our signal handling decides what reaches it
            preexec_fn=self._preexec,  # only prctl: safe between fork and exec
        )
        what = "resuming" if state else "starting"
        self.report(f"{what} {job.name} on {slot.label} (pid {proc.pid})")
        return _Running(job, slot, proc, log, epoch, runs + 1)

    def _forward_stop(self, running: Mapping[int, _Running]) -> None:
        for r in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGTERM)

    # --------------------------------------------------------------------- finishing
    def _finished(self, r: _Running, code: int) -> Result | None:
        """Turn an exit status into a result, or None to run the experiment again."""
        r.log.close()
        log_path = Path(r.log.name)
        name = r.job.name
        if code == ExitCode.DONE:
            return Result(name, "done", code, log=log_path, runs=r.runs)
        if code == ExitCode.PRUNED:
            state = ExperimentDir(self.root / name).read_state() or {}
            return Result(name, "pruned", code, str(state.get("message", "")), log_path, r.runs)
        if code == ExitCode.PAUSED and self.stop.signum is None:
            state = ExperimentDir(self.root / name).read_state() or {}
            epoch = state.get("epoch")
            if isinstance(epoch, int) and epoch > r.epoch_before:
                self.report(f"{name} paused after epoch {epoch}; continuing")
                return None
            return Result(
                name, "failed", code, "paused without finishing an epoch", log_path, r.runs
            )
        if code in RESUMABLE_EXIT_CODES and self.stop.signum is not None:
            return Result(name, "stopped", code, "checkpointed; run again to resume", log_path)
        if code < 0:
            message = f"killed by {signal.Signals(-code).name}"
        elif code == ExitCode.STOPPED:
            message = "stopped by a signal after checkpointing (run again to resume)"
        else:
            message = _last_line(log_path) or f"exit status {code}"
        return Result(name, "failed", code, message, log_path, r.runs)

    def _record(self, result: Result) -> None:
        self.results[result.name] = result
        if self.on_finish is not None:
            self.on_finish(result)

    # -------------------------------------------------------------------------- loop
    def _startable(self, job: Job) -> bool:
        """False (recorded as skipped) for a job that is done or running elsewhere."""
        state = ExperimentDir(self.root / job.name).read_state()
        if state is not None and state.get("status") == "done":
            self._record(Result(job.name, "skipped", message="already done"))
            return False
        pid = running_elsewhere(state)
        if pid is not None:
            self._record(Result(job.name, "running elsewhere", message=f"pid {pid}"))
            return False
        return True

    def _next_job(self, pending: collections.deque[tuple[Job, int]]) -> tuple[Job, int] | None:
        """The next job to launch: a pending one, else one from ``more_jobs``."""
        while not pending and self.more_jobs is not None:
            job = self.more_jobs()
            if job is None:
                self.more_jobs = None
                break
            self.jobs.append(job)
            if self._startable(job):
                pending.append((job, 0))
        return pending.popleft() if pending else None

    def run(self) -> list[Result]:
        pending: collections.deque[tuple[Job, int]] = collections.deque(
            (job, 0) for job in self.jobs if self._startable(job)
        )
        free = list(self.slots)
        running: dict[int, _Running] = {}
        forwarded = False
        while running or ((pending or self.more_jobs is not None) and self.stop.signum is None):
            while free and self.stop.signum is None:
                nxt = self._next_job(pending)
                if nxt is None:
                    break
                r = self._launch(nxt[0], free.pop(0), nxt[1])
                running[r.proc.pid] = r
            if self.stop.signum is not None and not forwarded:
                self._forward_stop(running)
                forwarded = True
            if not running:
                continue
            time.sleep(POLL_SECONDS)
            if self.on_tick is not None:
                self.on_tick([r.job.name for r in running.values()])
            for pid, r in list(running.items()):
                code = r.proc.poll()
                if code is None:
                    continue
                del running[pid]
                free.append(r.slot)
                free.sort(key=self.slots.index)
                result = self._finished(r, code)
                if result is None:
                    pending.appendleft((r.job, r.runs))
                else:
                    self._record(result)
        for job, _ in pending:  # never started because we were stopped
            self._record(Result(job.name, "stopped", message="not started"))
        return [self.results[j.name] for j in self.jobs]
