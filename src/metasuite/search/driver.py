"""The search loop: trials asked from the study, run by run-suite's pool, watched, told.

Each trial is an ordinary generated experiment (:mod:`metasuite.search.trials`) run by
:class:`metasuite.suite.pool.Pool`, K at a time. At every poll the driver reads each
running trial's ``summary_statistics.csv`` and reports new epochs to the study; when the
pruner says stop it writes the experiment's end request
(:meth:`~metasuite.training.experiment_dir.ExperimentDir.request_end`), which the builder
honours at its next epoch end: the trial ends with a checkpoint and state ``pruned``.

Killed at any moment (SIGKILL included) and started again with the same command, the
driver continues the same study: trials still RUNNING in the study and held by no live
driver are re-attached under their numbers and their experiments resume from their
checkpoints; an experiment that ended while no driver watched is told as it ended;
epochs already reported are not reported again; ``--trials N`` counts every trial of
the study. The pool's children get SIGTERM when the driver dies (they checkpoint and
exit), so nothing keeps training unwatched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from metasuite.errors import ConfigError
from metasuite.search.engine import Study
from metasuite.search.spec import Search
from metasuite.search.trials import ending, render_trial, validation_curve, write_trial
from metasuite.suite.pool import Job, Pool, Result, Slot, StopFlag, running_elsewhere
from metasuite.text import shown_epoch
from metasuite.training.experiment_dir import ExperimentDir

PREVIOUS_RUN_WAIT_S = 120.0
"""How long a restarted driver waits for a trial's process left by the killed driver."""


@dataclass
class Summary:
    """What one run of the driver did."""

    started: list[int] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)
    ended: dict[int, str] = field(default_factory=dict)  # number -> complete|pruned|fail
    crashed: list[str] = field(default_factory=list)  # trials whose experiment failed
    stopped: bool = False


class Driver:
    """Runs one search until the study holds ``total`` trials and none is running."""

    def __init__(
        self,
        search: Search,
        study: Study,
        total: int,
        slots: Sequence[Slot],
        experiments_root: Path,
        *,
        env: dict[str, str],
        stop: StopFlag,
        report: Callable[[str], None] = print,
    ) -> None:
        self.search = search
        self.study = study
        self.total = total
        self.slots = list(slots)
        self.root = experiments_root
        self.env = env
        self.stop = stop
        self.say = report
        self.numbers: dict[str, int] = {}  # experiment name -> trial number
        self.reported: dict[int, int] = {}  # trial number -> epochs the study has
        self.asked_to_end: set[int] = set()
        self.summary = Summary()

    # -------------------------------------------------------------- preparing trials
    def _prepare(self, number: int, params: dict, *, resumed: bool = False) -> Job | None:
        """Render and write trial ``number``; None when it has ended (told here)."""
        values = ", ".join(f"{k}={v!r}" for k, v in params.items())
        try:
            exp = render_trial(self.search, number, params)
        except ConfigError as exc:
            self.study.tell(number, "fail", message=f"invalid config: {exc}")
            self.summary.ended[number] = "fail"
            self.say(f"trial {number} ({values}) failed: invalid config: {exc}")
            return None
        self.study.set_attr(number, "experiment", exp.name)
        write_trial(self.search, exp)
        self.numbers[exp.name] = number
        self.reported.setdefault(number, self.study.reported_steps(number))
        end = ending(self.search, self.root / exp.name)
        if end.status in ("done", "pruned"):  # ended while no driver was watching
            self._tell(number, exp.name, end.status)
            return None
        what = "resuming (from its checkpoint, if any)" if resumed else "starting"
        self.say(f"trial {number}: {what} {exp.name} ({values})")
        return Job(exp.name, exp.script_path)

    def _next(self) -> Job | None:
        """A new trial while the study holds fewer than ``total``; None when it is full."""
        while self.study.count() < self.total and self.stop.signum is None:
            number, params = self.study.claim()
            if number >= self.total:  # another driver of a shared study took the last one
                message = f"not run: the study already had {self.total} trials (--trials)"
                self.study.tell(number, "fail", message=message)
                self.say(f"trial {number} {message}")
                return None
            self.summary.started.append(number)
            job = self._prepare(number, params)
            if job is not None:
                return job
        return None

    # -------------------------------------------------------------- watching trials
    def _report(self, number: int, name: str) -> bool:
        """Report epochs the study has not seen; True when the pruner says stop."""
        curve = validation_curve(self.root / name)
        if len(curve) <= self.reported.get(number, 0):
            return False
        prune = self.study.report(number, curve)
        self.reported[number] = len(curve)
        return prune

    def _tick(self, names: Sequence[str]) -> None:
        numbers = []
        for name in names:
            number = self.numbers.get(name)
            if number is None:
                continue
            numbers.append(number)
            if self._report(number, name) and number not in self.asked_to_end:
                epochs = self.reported[number]
                reason = (
                    f"the {self.search.pruner['kind']} pruner stopped trial {number} "
                    f"after epoch {shown_epoch(epochs - 1)}"
                )
                ExperimentDir(self.root / name).request_end(reason)
                self.asked_to_end.add(number)
                self.say(f"trial {number}: pruning ({reason}); it ends at its next epoch end")
        self.study.heartbeat(numbers)

    # -------------------------------------------------------------- ending trials
    def _tell(self, number: int, name: str, status: str, message: str = "") -> None:
        self._report(number, name)  # the last epochs, before the trial is closed
        end = ending(self.search, self.root / name)
        if end.best_epoch is not None:
            self.study.set_attr(number, "best_epoch", end.best_epoch)
        if status == "done":
            if end.value is None:
                outcome, message = "fail", f"objective {self.search.objective} not found"
            else:
                outcome = "complete"
        elif status == "pruned":
            outcome, message = "pruned", end.message
        else:
            outcome = "fail"
        self.study.tell(number, outcome, end.value, message)
        self.summary.ended[number] = outcome
        shown = f" {self.search.objective} {end.value:.4f}" if end.value is not None else ""
        self.say(f"trial {number} {outcome}{shown}{': ' + message if message else ''}")

    def _finished(self, result: Result) -> None:
        number = self.numbers.get(result.name)
        if number is None:
            return
        if result.status in ("done", "skipped"):
            self._tell(number, result.name, "done")
        elif result.status == "pruned":
            self._tell(number, result.name, "pruned")
        elif result.status == "failed":
            self.summary.crashed.append(result.name)
            self._tell(number, result.name, "failed", result.message)
        # "stopped", "running elsewhere": the trial stays RUNNING, to be re-attached

    # -------------------------------------------------------------- the loop
    def _wait_for_previous(self, number: int, name: str) -> None:
        """A trial of a killed driver gets SIGTERM from the kernel when its driver dies and
        stops at its next meta-iteration; a driver started at once waits for that, rather
        than skip the trial as running elsewhere."""
        deadline = time.monotonic() + PREVIOUS_RUN_WAIT_S
        pid = running_elsewhere(ExperimentDir(self.root / name).read_state())
        if pid is not None:
            self.say(f"trial {number}: waiting for its previous process (pid {pid}) to stop")
        while pid is not None and time.monotonic() < deadline and self.stop.signum is None:
            time.sleep(0.5)
            pid = running_elsewhere(ExperimentDir(self.root / name).read_state())

    def run(self) -> Summary:
        jobs = []
        for number in self.study.orphans():
            _, params = self.study.claim(number)
            self.summary.resumed.append(number)
            job = self._prepare(number, params, resumed=True)
            if job is not None:
                self._wait_for_previous(number, job.name)
                jobs.append(job)
        pool = Pool(
            jobs,
            self.slots,
            self.root,
            env=self.env,
            stop=self.stop,
            report=lambda line: None,  # the driver says what matters, per trial
            on_finish=self._finished,
            more_jobs=self._next,
            on_tick=self._tick,
        )
        pool.run()
        self.summary.stopped = self.stop.signum is not None
        return self.summary
