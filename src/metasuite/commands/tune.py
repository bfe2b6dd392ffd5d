"""``metasuite tune``: a hyper-parameter search with Optuna over the suite's templates.

Thin glue around :mod:`metasuite.search`: read and check the search file, open the study,
run the driver on a pool of devices (as ``run-suite`` does), print the trials. With
``--promote K`` it runs nothing and writes the best K trials as a multi-seed suite file.
Exit status: 0 when the study holds its trials and none crashed (a trial whose sampled
values make an invalid config is failed in the study, not here), 1 when a trial's
experiment failed, 2 for bad input (nothing started), 128+signal when stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from metasuite.commands import _options
from metasuite.errors import UserError

HELP = "search hyper-parameters with Optuna: trials are generated experiments, pruned at epoch ends"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("search", metavar="SEARCH.toml", help="the search file")
    parser.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="trials in the study in total, those of earlier runs included "
        "(default: search.trials of the file)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="K",
        help="trials at once on the CPU (default 1); threads are shared out among them",
    )
    parser.add_argument(
        "--gpus",
        nargs="+",
        default=["cpu"],
        metavar="ID",
        help="GPU ids, one trial on each at a time (e.g. --gpus 0 1), or cpu (default)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL (default: search.storage, else sqlite:///<root>/study.db); "
        "e.g. postgresql://user:password@host/db to share a study between drivers",
    )
    parser.add_argument(
        "--promote",
        type=int,
        metavar="K",
        help="run nothing; write the best K complete trials as a suite file over --seeds",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        metavar="S",
        help="with --promote: train seeds 0..S-1 of each promoted configuration (default 3)",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="with --promote: the suite file to write (default: <search>_best.toml beside "
        "the search file, where its templates are)",
    )
    _options.add_experiments_root(parser)
    _options.add_quiet(parser, "no per-trial lines")


def _total(args: argparse.Namespace, search) -> int:
    total = args.trials if args.trials is not None else search.trials
    if total is None:
        raise UserError(f"--trials N is missing (and {search.path} has no search.trials)")
    if total < 1:
        raise UserError(f"--trials must be >= 1, got {total}")
    return total


def _promote(args: argparse.Namespace, search) -> int:
    from metasuite.search.engine import Study
    from metasuite.search.promote import promoted_suite

    if args.promote < 1:
        raise UserError(f"--promote must be >= 1, got {args.promote}")
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    out = (
        Path(args.out).expanduser().resolve()
        if args.out
        else search.path.with_name(f"{search.path.stem}_best.toml")
    )
    if out.parent != search.path.parent:
        raise UserError(
            f"--out {args.out}: the suite file must be in {search.path.parent}, beside the "
            "search file, so that it finds the same templates"
        )
    url = args.storage or search.storage
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        raise UserError(f"{search.path}: no study yet ({url}); run the search first")
    study = Study(search, args.storage)
    best = study.best(args.promote)
    if not best:
        raise UserError(f"{search.path}: the study has no complete trial to promote yet")
    from metasuite.fsutil import write_text_atomic

    write_text_atomic(out, promoted_suite(search, best, args.seeds, out))
    shown = ", ".join(f"trial {r.number} ({r.value:.4f})" for r in best)
    print(f"wrote {out}: {shown} x seeds 0..{args.seeds - 1}")
    print(f"next: metasuite generate --suite {out} && metasuite run-suite --suite {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    from metasuite.search import engine
    from metasuite.search.spec import default_storage, load_search
    from metasuite.suite.pool import make_slots

    search = load_search(args.search)
    engine.check(search)
    if args.promote is not None:
        return _promote(args, search)
    total = _total(args, search)
    gpu_words = args.gpus
    try:
        slots = make_slots(gpu_words, 1, args.workers if gpu_words == ["cpu"] else 1)
    except ValueError as exc:
        raise UserError(str(exc).replace("--jobs", "--workers")) from None
    if gpu_words != ["cpu"] and args.workers != 1:
        raise UserError("--workers applies to the CPU; on GPUs one trial runs on each GPU")
    gpu_ids = sorted({int(d) for slot in slots for d in slot.devices if d != "cpu"})
    if gpu_ids:
        from metasuite.training.runtime import check_gpu_ids

        check_gpu_ids(gpu_ids, f"--gpus {' '.join(gpu_words)}")
    url = args.storage or search.storage
    if url == default_storage(search.root):
        from metasuite.fsutil import make_dirs

        make_dirs(search.root)  # the study's folder, created only for the default SQLite file
    with _one_sqlite_driver(search.root, url):
        return _search(args, search, total, slots, url)


@contextlib.contextmanager
def _one_sqlite_driver(folder: Path, url: str) -> Iterator[None]:
    """A second driver on one SQLite study would fight over its writes ("database is
    locked"): refuse it at once. The lock is an flock on the search's folder, released
    when the driver exits or is killed."""
    if not url.startswith("sqlite:") or not folder.is_dir():
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another metasuite tune is running the search in {folder}; with SQLite one "
                "driver writes the study (share one through PostgreSQL: --storage)"
            ) from None
        yield
    finally:
        os.close(fd)


def _search(args: argparse.Namespace, search, total: int, slots, url: str) -> int:
    from metasuite import progress
    from metasuite.search import engine
    from metasuite.search.driver import Driver
    from metasuite.suite.files import job_environment
    from metasuite.suite.pool import StopFlag, share_cpu_threads
    from metasuite.text import plural

    root = _options.experiments_root_of(args)
    study = engine.Study(search, url)

    env = job_environment(root)
    share_cpu_threads(env, slots)

    def say(line: str) -> None:
        if not args.quiet:
            progress.write(line, file=sys.stderr)

    stop = StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        driver = Driver(search, study, total, slots, root, env=env, stop=stop, report=say)
        summary = driver.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

    rows = study.rows()
    states = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    print(f"study {search.study_name}: {plural(len(rows), 'trial')} of {total} ({counts})")
    best = study.best(1)
    if best:
        b = best[0]
        values = ", ".join(f"{k}={v!r}" for k, v in b.params.items())
        print(
            f"best: trial {b.number} {search.objective} {b.value:.4f} ({values}) [{b.experiment}]"
        )
    if summary.stopped:
        print("stopped: run the same command again to continue the study", file=sys.stderr)
        return 128 + (stop.signum or 0)
    if summary.crashed:
        print(f"failed: {', '.join(summary.crashed)} (see their logs/run_suite.log)")
        return 1
    return 0
