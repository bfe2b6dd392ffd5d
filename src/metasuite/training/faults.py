"""Fault injection for crash tests: kill or pause this process at a named point.

Exact resume is only believable if it is tested where crashes hurt most: between
writing a checkpoint's temporary file and renaming it into place, in the middle of an
epoch, during validation. Timing a SIGKILL from outside cannot hit such a window
reliably, so the builder calls :func:`fault_point` at those places and the tests ask,
through environment variables, for a SIGKILL on the n-th visit or for a pause there.
Unset (the normal case), a fault point costs one dictionary lookup.

- ``METASUITE_FAULT="site:n[,site:n...]"``: SIGKILL this process on the n-th visit
  (1-based, counted per process) to ``site``.
- ``METASUITE_FAULT_SLEEP="site:seconds[,...]"``: sleep at every visit to ``site``,
  widening the window for a kill from outside.
- ``METASUITE_FAULT_TERM="site:n[,...]"``: send this process a SIGTERM on the n-th visit
  to ``site`` (as Slurm or a user would), so a test knows the phase a stop arrived in.

Sites used by the builder: ``iteration`` (after a meta-iteration, before any checkpoint
of it), ``checkpoint-write`` (temporary file written, not yet renamed),
``checkpoint-done`` (checkpoint in place, CSV and state not yet updated),
``validation`` (between validation batches) and ``test`` (between test models).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

FAULT_ENV = "METASUITE_FAULT"
SLEEP_ENV = "METASUITE_FAULT_SLEEP"
TERM_ENV = "METASUITE_FAULT_TERM"

_visits: Counter[str] = Counter()


def _parse(value: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        site, _, number = item.rpartition(":")
        if not site:
            raise ValueError(f"{item!r}: expected site:number")
        out[site] = float(number)
    return out


def fault_point(site: str) -> None:
    """Visit ``site``: sleep and/or SIGKILL this process if the environment asks for it."""
    kills = os.environ.get(FAULT_ENV)
    sleeps = os.environ.get(SLEEP_ENV)
    terms = os.environ.get(TERM_ENV)
    if not kills and not sleeps and not terms:
        return
    _visits[site] += 1
    pause = _parse(sleeps).get(site)
    if pause:
        time.sleep(pause)
    term = _parse(terms).get(site)
    if term is not None and _visits[site] == int(term):
        os.kill(os.getpid(), signal.SIGTERM)
    target = _parse(kills).get(site)
    if target is not None and _visits[site] == int(target):
        os.kill(os.getpid(), signal.SIGKILL)
