"""``metasuite quickstart``: a first suite that finishes, from nothing to a report.

generate → run on the CPU → report, for ``experiment_template_config/quickstart.toml``
(Omniglot 5-way 1-shot, MAML and MAML++, one seed each, about ten minutes on two CPU
cores). Everything it makes lives under ``<experiments-root>/quickstart/``: the
generated configs and scripts, the experiment folders and ``report/``, so the paper
suite's committed files are never touched (``metasuite generate --check`` stays clean).

Running it again resumes unfinished experiments and skips finished ones, as
``run-suite`` does. ``--epochs``/``--iters-per-epoch``/``--eval-tasks`` shrink the suite
(a smoke test in seconds); they change the generated configs, so a changed size needs a
fresh ``--experiments-root`` (resuming a run with other training settings is refused).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
from pathlib import Path
from typing import Any

from metasuite.commands import _options
from metasuite.config import REPO_ROOT
from metasuite.errors import UserError

HELP = "generate, run on the CPU and report a ten-minute MAML vs MAML++ suite"

QUICKSTART_SUITE = REPO_ROOT / "experiment_template_config" / "quickstart.toml"
FOLDER = "quickstart"
POLL_SECONDS = 1.0
# (flag, config key it overrides, what it counts)
SIZE_FLAGS = (
    ("--epochs", "total_epochs", "epochs"),
    ("--iters-per-epoch", "total_iter_per_epoch", "meta-iterations per epoch"),
    ("--eval-tasks", "num_evaluation_tasks", "validation and test tasks"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _options.add_experiments_root(parser, note=f"; quickstart uses its {FOLDER}/ subfolder")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        metavar="N",
        help="experiments at once on the CPU (default 2: MAML and MAML++ side by side)",
    )
    for flag, key, what in SIZE_FLAGS:
        parser.add_argument(
            flag, type=int, metavar="N", dest=key, help=f"{what} (default: quickstart.toml's)"
        )
    _options.add_quiet(parser, "no progress bar")


def _check_counts(args: argparse.Namespace) -> None:
    """Every count flag at once, before anything is written; named as typed."""
    for flag, key in (("--jobs", "jobs"), *((flag, key) for flag, key, _ in SIZE_FLAGS)):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")


def _suite(args: argparse.Namespace, base: Path) -> Any:
    from metasuite.suite.sweep import load_suite

    suite = load_suite(QUICKSTART_SUITE, root=base)
    given = ((key, getattr(args, key)) for _, key, _ in SIZE_FLAGS)
    overrides = {key: value for key, value in given if value is not None}
    if overrides:
        suite = dataclasses.replace(suite, constants={**suite.constants, **overrides})
    return suite


def _iterations(exp: Any) -> int:
    """Meta-iterations an experiment has run: its live progress (written every few
    seconds while it trains) or the checkpointed ``state.json``, whichever is further
    (the last few iterations of a run may fall between two live writes)."""
    value = (exp.read_state() or {}).get("iteration")
    checkpointed = value if isinstance(value, int) else 0
    return max(checkpointed, exp.read_live_iteration() or 0)


def _watch(base: Path, names: list[str], total: int, quiet: bool) -> tuple[Any, Any]:
    """A progress bar over the meta-iterations of all experiments, polled by a thread
    while the pool runs (from each experiment's ``logs/live_progress.json``)."""
    from metasuite import progress
    from metasuite.training.experiment_dir import ExperimentDir

    bar = progress.progress_bar(
        total=total, unit="it", desc="quickstart", quiet=quiet, file=sys.stderr
    )
    stop = threading.Event()

    def poll() -> None:
        while True:
            done = sum(_iterations(ExperimentDir(base / n)) for n in names)
            bar.update(min(done, total) - bar.n)
            if stop.wait(POLL_SECONDS):
                return

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join()
        bar.close()

    return bar, finish


def run(args: argparse.Namespace) -> int:
    import signal

    from metasuite import progress
    from metasuite.results.report import write_report
    from metasuite.suite.files import job_environment, suite_files
    from metasuite.suite.pool import Job, Pool, StopFlag, make_slots, one_runner, share_cpu_threads
    from metasuite.suite.sweep import expand

    _check_counts(args)
    base = _options.experiments_root_of(args) / FOLDER
    suite = _suite(args, base)
    experiments = expand(suite)

    # generate: the suite's files under base/ only (written when changed)
    files = suite_files(suite, experiments)
    for f in files:
        if f.status() != "unchanged":
            f.write()
    print(f"quickstart: {len(experiments)} experiments generated in {base}")

    # run on the CPU, threads shared out among the jobs (as run-suite does)
    jobs = [Job(e.name, e.script_path) for e in experiments]
    slots = make_slots(["cpu"], 1, min(args.jobs, len(jobs)))
    env = job_environment(base)
    share_cpu_threads(env, slots)
    total = sum(e.config.total_epochs * e.config.total_iter_per_epoch for e in experiments)
    _, finish = _watch(base, [e.name for e in experiments], total, args.quiet)

    def say(line: str) -> None:
        if not args.quiet:
            progress.write(line, file=sys.stderr)

    stop = StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with one_runner(base, suite.path):  # a second quickstart here: one line, refused
            pool = Pool(jobs, slots, base, env=env, stop=stop, report=say)
            results = pool.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        finish()
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        print(f"failed: {r.name} (exit {r.exit_code}): {r.message} [log: {r.log}]")
    if stop.signum is not None:
        print("quickstart: stopped; run the same command again to resume", file=sys.stderr)
        return 128 + stop.signum

    # report
    out = base / "report"
    report = write_report(base, suite.config_dir, out, quiet=args.quiet)
    print()
    print(report.results_md.read_text(encoding="utf-8").rstrip())
    print()
    print(f"report: {report.index}")
    for plot in report.plots:
        print(f"plot:   {plot}")
    return 1 if failed else 0
