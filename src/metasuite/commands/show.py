"""``metasuite show X``: an experiment's reproducibility record and its config drift."""

from __future__ import annotations

import argparse

HELP = "print an experiment's manifest and how its config differs from the generated one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment name (its folder under the root)")
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


def run(args: argparse.Namespace) -> int:
    from metasuite.manifest import show_experiment
    from metasuite.status import check_explicit_folders, configs_dir, experiments_root

    root = experiments_root(args.root)
    configs = configs_dir(args.configs)
    check_explicit_folders(args.root, root, args.configs, configs)
    print(show_experiment(args.experiment, root, configs), end="")
    return 0
