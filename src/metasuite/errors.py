"""Errors a user can cause, kept apart from bugs.

The CLI turns a :class:`UserError` into one line on stderr and exit status 2; anything
else is a bug and keeps its traceback. Raising these (never ``SystemExit``) keeps library
code usable from tests and notebooks.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status metasuite gives, defined once: commands return these, the
    generated scripts and sbatch files have them rendered in, and run-suite and Slurm
    requeueing read them back."""

    DONE = 0
    FAILED = 1
    """A bug or an environment fault (a traceback, a full disk): not the user's input."""
    USER_ERROR = 2
    PAUSED = 3
    """Stopped by ``total_epochs_before_pause``: run again to continue."""
    STOPPED = 4
    """Stopped by a signal after checkpointing, or by a SIGTERM during start-up before
    training (nothing new to save): run again to continue."""
    PRUNED = 5
    """Ended early at an epoch end because its folder asked it to (``metasuite tune``'s
    pruner): finished, with a checkpoint, but not trained to the end and not tested.
    Not resumable: running it again ends it again at once."""


RESUMABLE_EXIT_CODES: tuple[ExitCode, ...] = (ExitCode.PAUSED, ExitCode.STOPPED)
"""Exit statuses that mean "not finished, run me again" (Slurm requeues on them)."""

USER_ERROR_EXIT = ExitCode.USER_ERROR


class UserError(Exception):
    """A mistake the user can fix: bad input, missing file, wrong device id."""

    exit_code: int = USER_ERROR_EXIT


class EnvironmentFault(UserError):
    """Not the user's input but the machine's (a full disk): reported the same way, on
    one line without a traceback, but with exit status 1 (:attr:`ExitCode.FAILED`), since
    nothing in the command line or the config is wrong. Rerunning once the fault is
    fixed resumes."""

    exit_code: int = ExitCode.FAILED


class DiskFullError(EnvironmentFault):
    """No space (or quota) left on the file system being written."""


class ConfigError(UserError):
    """An experiment configuration that cannot be used as written."""


class DatasetError(UserError):
    """A dataset that is missing, incomplete or corrupt."""
