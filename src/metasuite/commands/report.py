"""``metasuite report``: tables and learning curves of the suite, summarised over seeds."""

from __future__ import annotations

import argparse

from metasuite.commands import _options

HELP = "summarise finished experiments over seeds: Markdown/CSV tables and learning-curve PNGs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _options.add_configs(parser)
    _options.add_experiments_root(parser, old_root_alias=True)
    _options.add_only(parser)
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where to write the report (default: <experiments-root>/report)",
    )
    parser.add_argument(
        "--html",
        action="store_true",
        help="also write <out>/report.html: one self-contained page (tables, overlaid "
        "learning curves, provenance, LSLR/MSL diagnostics; images embedded, no network)",
    )
    _options.add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from metasuite.errors import UserError
    from metasuite.results.report import write_report
    from metasuite.results.status import looks_like_experiment
    from metasuite.text import plural

    root = _options.experiments_root_of(args, must_exist=True)
    configs = _options.configs_of(args)
    out = Path(args.out).expanduser().resolve() if args.out else root / "report"
    if looks_like_experiment(out):
        raise UserError(f"--out {out}: this is an experiment folder; choose another folder")
    extra = None
    if args.suite and Path(args.suite).expanduser().is_file():
        from metasuite.search.spec import is_search_file

        if is_search_file(args.suite):  # the trials table and Optuna's plots as well
            from metasuite.search.report import write_search_section
            from metasuite.search.spec import load_search

            search = load_search(args.suite)
            extra = lambda folder: write_search_section(search, folder)  # noqa: E731
    files = write_report(root, configs, out, only=args.only, quiet=args.quiet, extra=extra)
    print(f"report written: {files.index}")
    print(f"  tables: {files.results_md}, {files.summary_csv}, {files.per_seed_csv}")
    print(f"  {plural(len(files.plots), 'learning-curve plot')} in {out / 'plots'}")
    if args.html:
        from metasuite.results.html import write_html_report

        page_path = out / "report.html"
        page = write_html_report(root, configs, page_path, only=args.only, quiet=args.quiet)
        print(
            f"  html: {page_path} ({plural(page.tables, 'table')}, "
            f"{plural(page.images, 'figure')}, self-contained)"
        )
        for problem in page.problems:
            print(f"  problem: {problem}")
    if extra is not None:
        print(f"  search: trials table and plots in {out / 'search'}")
    return 0
