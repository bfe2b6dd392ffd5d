"""Wording shared by every message: one way to put a count before a noun.

"1 experiments" and "1 classes" read as bugs; each message building its own plural gets
some of them wrong, so every count in a user-facing line goes through :func:`plural`.
"""

from __future__ import annotations

from typing import TypeVar

Number = TypeVar("Number", int, float)

_ES_ENDINGS = ("s", "x", "z", "ch", "sh")
_HARD_CH = ("epoch", "stomach", "monarch", "patriarch", "tech")
"""Nouns whose "ch" sounds as k: plural with a plain "s" ("2 epochs", not "epoches")."""


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``"1 experiment"``, ``"3 experiments"``, ``"2 classes"``, ``"0 GPUs"``.

    ``many`` is the plural where adding "s" (or "es" after s, x, z, ch, sh) is wrong.
    """
    if count == 1:
        return f"{count} {noun}"
    if many is None:
        hard = noun.lower().endswith(_HARD_CH)
        many = noun + ("es" if noun.endswith(_ES_ENDINGS) and not hard else "s")
    return f"{count} {many}"


def shown_epoch(stored: Number) -> Number:
    """The epoch as people read it: 1-based, as the log's "epoch 1/3" counts.

    Files keep the stored, 0-based epoch index (``state.json`` ``best_val_epoch``,
    ``summary_statistics.csv``, ``test_summary.json``, checkpoint names, as in the
    reference MAML++ code); every message, table and plot shows ``stored + 1`` through
    here, so the two conventions meet in one place.
    """
    return stored + 1
