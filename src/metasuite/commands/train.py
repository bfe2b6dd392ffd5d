"""``metasuite train``: run one experiment, resuming it if it was started before.

Exit status: 0 done, 2 user error, 3 paused (total_epochs_before_pause), 4 stopped by
SIGTERM/SIGINT after checkpointing, 1 failure (a bug; traceback shown). A scheduler
can requeue on 3 and 4 and stop on anything else.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "train (or resume, or test) one experiment from its config file"

EXPERIMENTS_ROOT_ENV = "METASUITE_EXPERIMENTS_ROOT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="experiment config (JSON)")
    parser.add_argument(
        "--gpus",
        metavar="IDS",
        default=None,
        help="'cpu' or a GPU id such as 0 (default: GPU 0 when CUDA is available, else cpu)",
    )
    parser.add_argument(
        "--experiments-root",
        metavar="DIR",
        default=None,
        help=f"where experiment folders live (default: ${EXPERIMENTS_ROOT_ENV}, "
        "else <repo>/experiments)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars, only log lines")
    parser.add_argument(
        "--force",
        action="store_true",
        help="resume even if training settings differ from the run being resumed",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        default=None,
        help="checkpoint every N meta-iterations as well as at each epoch end "
        "(default: the config's checkpoint_every_n_iters; 0: epoch ends only)",
    )


def experiments_root(explicit: str | None) -> Path:
    """``--experiments-root``, else ``$METASUITE_EXPERIMENTS_ROOT``, else <repo>/experiments."""
    from metasuite.config import REPO_ROOT

    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(EXPERIMENTS_ROOT_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "experiments"


def run(args: argparse.Namespace) -> int:
    from metasuite.config import load_config, replace
    from metasuite.runner import run_experiment
    from metasuite.runtime import resolve_devices

    config = load_config(args.config)
    if args.checkpoint_every is not None:
        config = replace(
            config, source="--checkpoint-every", checkpoint_every_n_iters=args.checkpoint_every
        )
    devices = resolve_devices(args.gpus)
    outcome = run_experiment(
        config,
        experiments_root(args.experiments_root),
        devices,
        quiet=args.quiet,
        force=args.force,
    )
    return int(outcome)
