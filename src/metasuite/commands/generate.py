"""``metasuite generate``: suite templates → experiment_config/*.json and experiment_scripts/*.sh.

Everything is rendered and validated first; only then are the files that changed
written (atomically), so a bad template never leaves a half-updated suite. ``--check``
writes nothing and exits 1 when a file is stale, missing or no longer produced, which is
what CI runs to keep the committed files honest.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from metasuite.commands import _options
from metasuite.errors import UserError
from metasuite.text import plural

HELP = "render the suite's templates into experiment configs and scripts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _options.add_suite(parser)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if any generated file is stale, missing or extra",
    )
    parser.add_argument(
        "--clean",
        action="store_true",
        help="remove configs and scripts that the grid no longer produces",
    )
    _options.add_only(parser, note="; the whole grid is still validated")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every file written")


def _show(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("../..") else str(path)


def _refuse_root_without_parent(args: argparse.Namespace, root: Path, suite_file: Path) -> None:
    """generate creates the suite root, not a whole tree: a root whose parent is missing
    is almost always a typo, and silently creating ``/nonexistent/deep/x`` hides it."""
    if root.exists() or root.parent.is_dir():
        return
    where = f"--suite-root {args.suite_root}" if args.suite_root else f"{suite_file}: [suite] root"
    raise UserError(
        f"{where}: the parent folder {root.parent} does not exist; create it first "
        "(generate creates only the root folder itself)"
    )


def run(args: argparse.Namespace) -> int:
    from metasuite.suite.files import extra_files, suite_files

    if args.check and args.clean:
        raise UserError("--check writes nothing; it cannot be combined with --clean")
    if args.clean and args.only:
        raise UserError("--clean works on the whole suite; it cannot be combined with --only")

    suite, experiments = _options.selected_experiments(args)
    if not args.check:
        _refuse_root_without_parent(args, suite.root, suite.path)
    files = suite_files(suite, experiments)
    extras = [] if args.only else extra_files(suite, files)
    seen: set[str] = set()
    for exp in experiments:
        for message in exp.warnings:
            if message not in seen:
                seen.add(message)
                print(f"warning: {message}", file=sys.stderr)

    statuses = [(f, f.status()) for f in files]
    changed = [(f, s) for f, s in statuses if s != "unchanged"]
    unchanged = len(files) - len(changed)

    if args.check:
        for f, s in changed:
            print(f"{s}: {_show(f.path)}")
            if s == "stale":
                sys.stdout.write(f.diff())
        for path in extras:
            print(f"extra: {_show(path)} (not produced by the suite; generate --clean removes it)")
        if changed or extras:
            print(
                f"{len(changed) + len(extras)} of {plural(len(files), 'generated file')} "
                "out of date; "
                "run: metasuite generate" + (" --clean" if extras else ""),
                file=sys.stderr,
            )
            return 1
        print(f"{plural(len(experiments), 'experiment')}, {plural(len(files), 'file')} up to date")
        return 0

    for f, _ in changed:
        f.write()
        if args.verbose:
            print(f"wrote {_show(f.path)}")
    for path in extras:
        if args.clean:
            path.unlink()
            print(f"removed {_show(path)}")
        else:
            print(f"not produced by the suite (kept; --clean removes it): {_show(path)}")
    print(
        f"{plural(len(experiments), 'experiment')}: {len(changed)} written, {unchanged} unchanged"
    )
    return 0
