"""``metasuite run-suite``: every experiment of the suite on a pool of devices.

Thin glue around :mod:`metasuite.suite.pool`: expand the suite, refuse to run
generated files that are out of date, build the device slots, and print what happened.
Exit status: 0 when every selected experiment is done, 1 when any failed (all others
still ran), 2 for a usage mistake, 128+signal when stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys

from metasuite.commands import _options
from metasuite.errors import UserError

HELP = "run every experiment of the suite on a pool of devices, resuming unfinished ones"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpus",
        nargs="+",
        default=["cpu"],
        metavar="ID",
        help="GPU ids of the pool (e.g. --gpus 0 1 2 3), or cpu (default: cpu)",
    )
    parser.add_argument(
        "--per-experiment",
        type=int,
        default=1,
        metavar="K",
        help="GPUs per experiment: the pool runs len(gpus)/K experiments at once (default 1)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="experiments at once on the CPU (default 1); threads are shared out among them",
    )
    _options.add_suite(parser)
    _options.add_experiments_root(parser)
    _options.add_only(parser)
    _options.add_quiet(parser, "no progress bar, no start lines")


def run(args: argparse.Namespace) -> int:
    from metasuite import progress
    from metasuite.suite.files import config_file, job_environment, refuse_outdated, script_file
    from metasuite.suite.pool import (
        Job,
        Pool,
        Result,
        StopFlag,
        make_slots,
        one_runner,
        share_cpu_threads,
    )
    from metasuite.text import plural

    try:
        slots = make_slots(args.gpus, args.per_experiment, args.jobs)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    gpu_ids = sorted({int(d) for slot in slots for d in slot.devices if d != "cpu"})
    if gpu_ids:  # once, up front: not one failed start per experiment
        from metasuite.training.runtime import check_gpu_ids

        check_gpu_ids(gpu_ids, f"--gpus {' '.join(args.gpus)}")
    suite, experiments = _options.selected_experiments(args)
    jinja = suite.environment()
    refuse_outdated(f for e in experiments for f in (config_file(e), script_file(suite, e, jinja)))

    root = _options.experiments_root_of(args)
    env = job_environment(root)
    share_cpu_threads(env, slots)

    jobs = [Job(e.name, e.script_path) for e in experiments]
    bar = progress.progress_bar(
        total=len(jobs), unit="exp", quiet=args.quiet, file=sys.stderr, leave=False
    )

    def report(line: str) -> None:
        if not args.quiet:
            progress.write(line, file=sys.stderr)

    def on_finish(result: Result) -> None:
        if result.status == "failed":
            progress.write(f"{result.name} failed: {result.message}", file=sys.stderr)
        elif result.status == "done":
            report(f"{result.name} done")
        if result.status in ("done", "pruned", "skipped", "failed"):
            bar.update(1)

    stop = StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with one_runner(root, suite.path):
            pool = Pool(jobs, slots, root, env=env, stop=stop, report=report, on_finish=on_finish)
            results = pool.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        bar.close()

    order = ("done", "pruned", "skipped", "failed", "stopped", "running elsewhere")
    counts = {status: sum(r.status == status for r in results) for status in order}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "nothing to do"
    print(f"{plural(len(results), 'experiment')} on {', '.join(s.label for s in slots)}: {summary}")
    for r in results:
        if r.status == "failed":
            print(f"failed: {r.name} (exit {r.exit_code}): {r.message} [log: {r.log}]")
        elif r.status == "running elsewhere":
            print(f"skipped: {r.name} is running in {r.message} on this host")
    if stop.signum is not None:
        print("stopped: run the same command again to resume", file=sys.stderr)
        return 128 + stop.signum
    return 1 if counts.get("failed") else 0
