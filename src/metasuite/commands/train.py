"""``metasuite train``: run one experiment, resuming it if it was started before.

Exit status: 0 done, 2 user error, 3 paused (total_epochs_before_pause), 4 stopped by
SIGTERM/SIGINT after checkpointing, 1 failure (a bug; traceback shown). A scheduler
can requeue on 3 and 4 and stop on anything else. In a multi-node job every node's
launcher returns the job's status (the ranks agree on how it ends); a rendezvous that
does not form is 2 on the node that saw it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metasuite.commands import _options
from metasuite.errors import RESUMABLE_EXIT_CODES, ExitCode, UserError

HELP = "train (or resume, or test) one experiment from its config file"

NPROC_ENV = "METASUITE_NPROC"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="experiment config (JSON)")
    parser.add_argument(
        "--gpus",
        metavar="IDS",
        default=None,
        help="'cpu', a GPU id such as 0, or several (0,1: one process per GPU, data-parallel) "
        "(default: GPU 0 when CUDA is available, else cpu)",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        default=None,
        help=f"data-parallel processes (default: one per GPU given, 1 on the CPU; "
        f"${NPROC_ENV} sets it too); N > 1 on the CPU runs N gloo processes",
    )
    parser.add_argument(
        "--nnodes",
        type=int,
        metavar="N",
        default=None,
        help="nodes of a multi-node job: run one launcher per node, each with its "
        "--node-rank and the same --rdzv-endpoint (inside a Slurm step: read from "
        "$SLURM_STEP_NUM_NODES/$SLURM_NNODES, $SLURM_NODEID and the node list)",
    )
    parser.add_argument(
        "--node-rank",
        type=int,
        metavar="R",
        default=None,
        help="this node's rank, 0..N-1; node 0 hosts the rendezvous (default 0)",
    )
    parser.add_argument(
        "--rdzv-endpoint",
        metavar="HOST:PORT",
        default=None,
        help="where the nodes meet: node rank 0's host and a free port (c10d rendezvous; "
        "$METASUITE_RDZV_TIMEOUT_S bounds the wait, default 300)",
    )
    _options.add_experiments_root(parser)
    _options.add_quiet(parser, "no progress bars, only log lines")
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


def run(args: argparse.Namespace) -> int:
    from metasuite.config import load_config, replace
    from metasuite.training import distributed
    from metasuite.training.experiment_dir import ExperimentDir
    from metasuite.training.runner import run_experiment
    from metasuite.training.runtime import resolve_devices

    config = load_config(args.config)
    if args.checkpoint_every is not None:
        config = replace(
            config, source="--checkpoint-every", checkpoint_every_n_iters=args.checkpoint_every
        )
    devices = resolve_devices(args.gpus)
    root = _options.experiments_root_of(args)
    ctx = distributed.worker_context()
    if ctx is not None:
        distributed.check_world_fits(config.batch_size, ctx.world_size, args.config)
        return _run_worker(args, config, root, devices, ctx)
    from metasuite.training.nodes import resolve_nodes, run_id

    nodes = resolve_nodes(args.nnodes, args.node_rank, args.rdzv_endpoint)
    nproc = _process_count(args, devices)
    distributed.check_world_fits(config.batch_size, nproc * nodes.count, args.config)
    if nproc > 1 or nodes.count > 1:
        code = distributed.launch(
            _worker_argv(args, root), nproc, nodes, run_id(config.experiment_name)
        )
    else:
        code = int(run_experiment(config, root, devices, quiet=args.quiet, force=args.force))
    line = next_step_line(ExperimentDir.for_config(root, config).path, root, code)
    if line:
        print(line)
    return code


def next_step_line(folder: Path, root: Path, code: int) -> str | None:
    """The last line of a training run: where its results are and what to run next
    (None after a failure, whose own error line says what went wrong)."""
    import shlex

    if code == ExitCode.DONE:
        report = shlex.join(["metasuite", "report", "--experiments-root", str(root)])
        return f"results in {folder} (test_summary.json, summary_statistics.csv); next: {report}"
    if code in RESUMABLE_EXIT_CODES:
        return f"checkpoint in {folder}; run the same command to continue"
    return None


def _process_count(args: argparse.Namespace, devices: list) -> int:
    """--nproc, else $METASUITE_NPROC, else one process per GPU (1 on the CPU)."""
    from metasuite.training.runtime import env_int

    nproc = args.nproc if args.nproc is not None else env_int(NPROC_ENV)
    gpus = [d for d in devices if d.type == "cuda"]
    if nproc is None:
        return max(1, len(gpus))
    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    if gpus and nproc != len(gpus):
        raise UserError(
            f"--nproc {nproc} with --gpus {args.gpus}: one process per GPU, so give "
            f"{nproc} GPU ids or leave --nproc out"
        )
    return nproc


def _worker_argv(args: argparse.Namespace, root: Path) -> list[str]:
    """The same command for each worker, with absolute paths."""
    argv = ["--config", str(Path(args.config).resolve()), "--experiments-root", str(root)]
    if args.gpus is not None:
        argv += ["--gpus", args.gpus]
    if args.checkpoint_every is not None:
        argv += ["--checkpoint-every", str(args.checkpoint_every)]
    argv += [flag for flag, on in (("--quiet", args.quiet), ("--force", args.force)) if on]
    return argv


def _run_worker(args: argparse.Namespace, config, root: Path, devices: list, ctx) -> int:
    """One torchrun worker: rank 0 records the exit status for the launcher."""
    from metasuite.training import distributed
    from metasuite.training.runner import run_experiment

    try:
        code = int(
            run_experiment(config, root, devices, ctx=ctx, quiet=args.quiet, force=args.force)
        )
    except UserError as exc:
        # Under the launcher: one line from it, not one per rank plus torchrun's pages.
        if distributed.record_error(ctx, exc):
            return ExitCode.DONE
        raise
    except BaseException:
        distributed.record_outcome(ctx, ExitCode.FAILED)
        raise
    # Under metasuite's launcher a pause or a stop is not a failure for torchrun to
    # report: the launcher returns the recorded status instead.
    if distributed.record_outcome(ctx, code) and code in RESUMABLE_EXIT_CODES:
        return ExitCode.DONE
    return code
