"""Errors a user can cause, kept apart from bugs.

The CLI turns a :class:`UserError` into one line on stderr and exit status 2; anything
else is a bug and keeps its traceback. Raising these (never ``SystemExit``) keeps library
code usable from tests and notebooks.
"""

from __future__ import annotations

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake the user can fix: bad input, missing file, wrong device id."""

    exit_code: int = USER_ERROR_EXIT


class ConfigError(UserError):
    """An experiment configuration that cannot be used as written."""


class DatasetError(UserError):
    """A dataset that is missing, incomplete or corrupt."""
