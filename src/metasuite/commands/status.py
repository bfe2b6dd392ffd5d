"""``metasuite status``: one line per experiment of the suite."""

from __future__ import annotations

import argparse

HELP = "show where each experiment stands (state, progress, best val and test accuracy)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        help="experiments folder (default: $METASUITE_EXPERIMENTS_ROOT, else <repo>/experiments)",
    )
    parser.add_argument(
        "--configs",
        "--suite",
        dest="configs",
        help="folder of generated configs (default: <repo>/experiment_config)",
    )
    parser.add_argument(
        "--only",
        metavar="PATTERN",
        help="only experiments whose name matches this shell pattern (or contains it)",
    )


def run(args: argparse.Namespace) -> int:
    from metasuite.status import (
        check_explicit_folders,
        configs_dir,
        experiments_root,
        format_status_table,
        list_suite,
        read_status,
    )

    root = experiments_root(args.root)
    configs = configs_dir(args.configs)
    check_explicit_folders(args.root, root, args.configs, configs)
    suite = list_suite(root, configs, args.only)
    if not suite:
        where = f"no experiments under {root} and no generated configs in {configs}"
        if args.only:
            where = f"no experiment matches {args.only!r} ({root}, {configs})"
        print(where)
        return 0
    print(format_status_table([read_status(e) for e in suite]), end="")
    return 0
