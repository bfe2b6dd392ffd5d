"""Options shared by several commands, defined once so they read and behave the same.

A researcher moves between ``generate``, ``run-suite``, ``status`` and ``report`` on
the same suite: the same flag must have the same name, help and meaning in each
(``--experiments-root`` is the experiments folder everywhere, ``--only`` selects the
same experiments everywhere, ``--suite`` is the suite file everywhere).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from metasuite.errors import UserError
from metasuite.selection import ONLY_HELP
from metasuite.training.experiment_dir import EXPERIMENTS_ROOT_ENV, experiments_root

if TYPE_CHECKING:
    from metasuite.suite.sweep import Experiment, Suite

SUITE_HELP = "suite file (default: experiment_template_config/suite.toml of this checkout)"


def add_experiments_root(
    parser: argparse.ArgumentParser, *, note: str = "", old_root_alias: bool = False
) -> None:
    """``--experiments-root DIR``; ``old_root_alias`` also accepts the older ``--root``
    (status, report and show called it that), without showing it in ``--help``."""
    parser.add_argument(
        "--experiments-root",
        metavar="DIR",
        help=f"where experiment folders live (default: ${EXPERIMENTS_ROOT_ENV}, "
        f"else <repo>/experiments){note}",
    )
    if old_root_alias:
        parser.add_argument("--root", dest="experiments_root", help=argparse.SUPPRESS)


def experiments_root_of(args: argparse.Namespace, *, must_exist: bool = False) -> Path:
    """The experiments folder of ``args``; ``must_exist`` for commands that only read it,
    where a typo must not read as 'no experiments yet'."""
    root = experiments_root(args.experiments_root)
    if must_exist and args.experiments_root and not root.is_dir():
        raise UserError(f"--experiments-root {args.experiments_root}: no such folder ({root})")
    return root


def add_only(parser: argparse.ArgumentParser, *, note: str = "") -> None:
    """Repeatable ``--only PATTERN`` (matching: :func:`metasuite.selection.matches`)."""
    parser.add_argument(
        "--only", metavar="PATTERN", action="append", default=[], help=ONLY_HELP + note
    )


def add_quiet(parser: argparse.ArgumentParser, help: str = "no progress bar") -> None:
    parser.add_argument("--quiet", action="store_true", help=help)


# ------------------------------------------------------- commands that expand the suite


class _SuiteRoot(argparse.Action):
    """``--suite-root``, or its older name ``--root`` (still works, with one warning line,
    because ``--root`` of status/report/show means the experiments folder). Both given
    is refused: one of them would be ignored silently."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = getattr(namespace, "_suite_root_option", None)
        if given is not None and given != option_string:
            raise argparse.ArgumentError(
                self,
                f"{given} and {option_string} both name the suite root; give --suite-root only",
            )
        if option_string == "--root":
            print(
                f"warning: {option_string} is deprecated here; use --suite-root (the folder "
                "of the suite's generated files)",
                file=sys.stderr,
            )
        namespace._suite_root_option = option_string
        setattr(namespace, self.dest, values)


def add_suite(parser: argparse.ArgumentParser) -> None:
    """``--suite FILE`` and ``--suite-root DIR`` (where its generated files are), as
    generate writes them; ``--root`` is a hidden, deprecated alias of the latter."""
    parser.add_argument("--suite", metavar="FILE", help=SUITE_HELP)
    parser.add_argument(
        "--suite-root",
        metavar="DIR",
        action=_SuiteRoot,
        help="where the suite's experiment_config/ and experiment_scripts/ are "
        "(default: the suite's [suite] root)",
    )
    parser.add_argument("--root", dest="suite_root", action=_SuiteRoot, help=argparse.SUPPRESS)


def selected_experiments(args: argparse.Namespace) -> tuple[Suite, list[Experiment]]:
    """The suite of ``--suite``/``--suite-root`` and its experiments selected by ``--only``."""
    from metasuite.suite.sweep import expand, load_suite

    suite = load_suite(args.suite, root=args.suite_root)
    return suite, expand(suite, only=args.only)


# ---------------------------------------------- commands that read the generated configs


def add_configs(parser: argparse.ArgumentParser) -> None:
    """``--suite FILE`` (its generated configs) or ``--configs DIR`` (a folder of them)."""
    parser.add_argument(
        "--suite",
        metavar="FILE",
        help="suite file: its generated configs are the experiments "
        "(default: those in <repo>/experiment_config)",
    )
    parser.add_argument(
        "--configs",
        metavar="DIR",
        help="folder of generated configs, instead of --suite",
    )


def configs_of(args: argparse.Namespace) -> Path:
    """The folder of generated configs named by ``--suite``/``--configs``.

    ``--suite`` once named the configs folder itself; a folder given there still is.
    A folder named on the command line must exist: a typo must not read as 'empty'.
    """
    from metasuite.config import REPO_ROOT

    if args.suite and args.configs:
        raise UserError("--suite and --configs both name the generated configs; give one")
    if args.suite and not Path(args.suite).expanduser().is_dir():
        from metasuite.search.spec import is_search_file, load_search
        from metasuite.suite.sweep import load_suite

        if is_search_file(args.suite):  # a search's trials are its generated configs
            return load_search(args.suite).suite.config_dir
        return load_suite(args.suite).config_dir
    given = args.suite or args.configs
    if not given:
        return REPO_ROOT / "experiment_config"
    configs = Path(given).expanduser().resolve()
    if not configs.is_dir():
        raise UserError(f"--configs {given}: no such folder ({configs})")
    return configs
