"""Wording shared by every message: one way to put a count before a noun.

"1 experiments" and "1 classes" read as bugs; each message building its own plural gets
some of them wrong, so every count in a user-facing line goes through :func:`plural`.
"""

from __future__ import annotations

_ES_ENDINGS = ("s", "x", "z", "ch", "sh")


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``"1 experiment"``, ``"3 experiments"``, ``"2 classes"``, ``"0 GPUs"``.

    ``many`` is the plural where adding "s" (or "es" after s, x, z, ch, sh) is wrong.
    """
    if count == 1:
        return f"{count} {noun}"
    if many is None:
        many = noun + ("es" if noun.endswith(_ES_ENDINGS) else "s")
    return f"{count} {many}"
