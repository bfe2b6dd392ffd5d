"""``metasuite show X``: an experiment's reproducibility record and its config drift."""

from __future__ import annotations

import argparse

from metasuite.commands import _options

HELP = "print an experiment's manifest and how its config differs from the generated one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "experiment", help="experiment name (its folder under --experiments-root) or folder"
    )
    _options.add_configs(parser)
    _options.add_experiments_root(parser, old_root_alias=True)


def run(args: argparse.Namespace) -> int:
    from metasuite.training.manifest import show_experiment

    root = _options.experiments_root_of(args, must_exist=True)
    configs = _options.configs_of(args)
    print(show_experiment(args.experiment, root, configs), end="")
    return 0
