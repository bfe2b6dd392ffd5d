"""Which experiments a command works on: the ``--only PATTERN`` rule, in one place.

Every command that takes ``--only`` (generate, run-suite, submit, status, report) must
select the same experiments for the same words, or a researcher who checked
``status --only X`` would run or submit something else with ``run-suite --only X``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

WILDCARDS = "*?["

ONLY_HELP = (
    "only experiments whose name matches this shell pattern ('*20way*_s0') "
    "or, without * ? [, contains it ('20way'); repeatable"
)


def matches(name: str, patterns: str | Sequence[str] | None) -> bool:
    """Whether ``name`` is selected by any of ``patterns`` (no patterns: every name).

    A pattern with wildcard characters is a shell pattern matched against the whole
    name; a plain word matches as a substring (``--only 20way``), which is what people
    type when they mean "those experiments".
    """
    if not patterns:
        return True
    if isinstance(patterns, str):
        patterns = (patterns,)
    return any(_matches_one(name, p) for p in patterns)


def _matches_one(name: str, pattern: str) -> bool:
    if any(ch in pattern for ch in WILDCARDS):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


__all__ = ["ONLY_HELP", "matches"]
