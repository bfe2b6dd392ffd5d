"""``metasuite report``: tables and learning curves of the suite, summarised over seeds."""

from __future__ import annotations

import argparse

HELP = "summarise finished experiments over seeds: Markdown/CSV tables and learning-curve PNGs"


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
    parser.add_argument("--out", help="where to write the report (default: <root>/report)")
    parser.add_argument(
        "--only",
        metavar="PATTERN",
        help="only experiments whose name matches this shell pattern (or contains it)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from metasuite.errors import UserError
    from metasuite.report import write_report
    from metasuite.status import (
        check_explicit_folders,
        configs_dir,
        experiments_root,
        looks_like_experiment,
    )

    root = experiments_root(args.root)
    configs = configs_dir(args.configs)
    check_explicit_folders(args.root, root, args.configs, configs)
    out = Path(args.out).expanduser().resolve() if args.out else root / "report"
    if looks_like_experiment(out):
        raise UserError(f"--out {out}: this is an experiment folder; choose another folder")
    files = write_report(root, configs, out, only=args.only, quiet=args.quiet)
    print(f"report written: {files.index}")
    print(f"  tables: {files.results_md}, {files.summary_csv}, {files.per_seed_csv}")
    print(f"  {len(files.plots)} learning-curve plots in {out / 'plots'}")
    return 0
