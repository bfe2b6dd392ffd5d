"""``metasuite status``: one line per experiment of the suite."""

from __future__ import annotations

import argparse

from metasuite.commands import _options
from metasuite.errors import UserError

HELP = "show where each experiment stands (state, progress, best val and test accuracy)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _options.add_configs(parser)
    _options.add_experiments_root(parser, old_root_alias=True)
    _options.add_only(parser)


def run(args: argparse.Namespace) -> int:
    from metasuite.results.status import format_status_table, list_suite, read_status

    root = _options.experiments_root_of(args, must_exist=True)
    configs = _options.configs_of(args)
    suite = list_suite(root, configs, args.only)
    if not suite:
        if args.only:  # a typo in a pattern is a mistake, as in every other command
            raise UserError(
                f"no experiment matches --only {' '.join(args.only)!r} ({root}, {configs})"
            )
        print(f"no experiments under {root} and no generated configs in {configs}")
        return 0
    print(format_status_table([read_status(e) for e in suite]), end="")
    return 0
