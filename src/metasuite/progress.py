"""Progress bars, decided once: shown on a terminal, never in a piped or redirected log.

A tqdm bar redraws itself with carriage returns; on a terminal that is one changing line,
but in ``train ... 2> log`` or a Slurm output file every redraw is kept, and a log of a
real run fills with hundreds of them. Every bar of metasuite is made here, so one rule
holds everywhere: ``--quiet`` hides bars, and so does an output that is not a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bars_wanted(quiet: bool = False, file: TextIO | None = None) -> bool:
    """Whether a bar would be drawn: not ``quiet`` and ``file`` (stderr) is a terminal."""
    if quiet:
        return False
    stream = sys.stderr if file is None else file
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(
    iterable: Iterable[T] | None = None, *, quiet: bool = False, **kwargs: Any
) -> tqdm:
    """A :class:`tqdm` bar over ``iterable`` (or a manual one), disabled unless
    :func:`bars_wanted`. Keyword arguments are tqdm's."""
    file = kwargs.get("file")
    return tqdm(iterable, disable=not bars_wanted(quiet, file), **kwargs)


write = tqdm.write
"""Print a line without breaking a bar in progress (a plain print when none is shown)."""
