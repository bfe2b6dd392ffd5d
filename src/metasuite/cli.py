"""The ``metasuite`` command: one sub-command per module in :mod:`metasuite.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; it imports heavy libraries (torch) inside ``run`` so that
``--help`` and ``generate`` stay quick. A :class:`~metasuite.errors.UserError` becomes one
line on stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings

from metasuite import __version__
from metasuite.errors import UserError
from metasuite.fsutil import environment_fault

COMMANDS: dict[str, str] = {
    "generate": "metasuite.commands.generate",
    "train": "metasuite.commands.train",
    "run-suite": "metasuite.commands.run_suite",
    "tune": "metasuite.commands.tune",
    "submit": "metasuite.commands.submit",
    "status": "metasuite.commands.status",
    "report": "metasuite.commands.report",
    "show": "metasuite.commands.show",
    "data": "metasuite.commands.data",
    "quickstart": "metasuite.commands.quickstart",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metasuite",
        description="Generate, run and summarise suites of MAML++ few-shot experiments.",
    )
    parser.add_argument("--version", action="version", version=f"metasuite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """Warnings are for users here: one line, no source location."""
    return f"warning: {message}\n"


class EarlyStop:
    """SIGTERM handler of ``train`` from its first moment until the trainer installs its
    own (:class:`metasuite.training.signals.StopRequest`, which adopts a signal recorded
    here through ``signal_name``): loading torch and the data takes seconds, and a
    scheduler's SIGTERM then must not kill the process with status 143 but stop it
    cleanly with status 4 (:attr:`~metasuite.errors.ExitCode.STOPPED`)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.signal_name = self.signal_name or signal.Signals(signum).name


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["train"] and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, EarlyStop())
    warnings.formatwarning = _one_line_warning
    warnings.simplefilter("default", DeprecationWarning)
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"metasuite {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (OSError, RuntimeError) as exc:
        # The last resort of the one classification of environment faults: a write
        # path that did not name its file still ends in one line, never a traceback.
        fault = environment_fault(exc)
        if fault is None:
            raise
        print(f"metasuite {args.command}: error: {fault}", file=sys.stderr)
        return fault.exit_code
    except KeyboardInterrupt:
        print(f"metasuite {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
