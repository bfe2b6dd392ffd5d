"""SIGTERM / SIGINT as a request to stop at the next safe point, not a crash.

Cluster schedulers send SIGTERM before killing a job at its time limit, and people press
Ctrl-C. Either way the meta-iteration under way is finished and checkpointed, so no
work is lost. A second Ctrl-C means "now": after the first signal SIGINT's default
handler is put back, so it raises KeyboardInterrupt. A repeated SIGTERM does not: under
Slurm the same stop arrives more than once (the scheduler signals every process of the
job, and the batch script and the distributed launcher forward it too), and treating the
copy as "now" would throw away the checkpoint the first one asked for. A scheduler that
really means "now" sends SIGKILL after its grace period.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager that records the first SIGTERM/SIGINT instead of dying."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.repeated_sigterms = 0
        self.early = False
        """True when the signal came during start-up, before this handler was installed."""
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # only SIGTERM stays handled after the first signal
            self.repeated_sigterms += 1
            return
        self.signal_name = signal.Signals(signum).name
        if signal.SIGINT in self._previous:
            signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

    def __enter__(self) -> StopRequest:
        # Handlers can only be installed from the main thread (e.g. not under some
        # test runners' worker threads); elsewhere signals keep their defaults.
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
                # A signal recorded by the start-up handler (metasuite.cli.EarlyStop)
                # before this one was installed is a stop request too.
                earlier = getattr(self._previous[sig], "signal_name", None)
                if earlier and not self.requested:
                    self.signal_name = earlier
                    self.early = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies (prctl).

    ``run-suite`` and the distributed launcher start children in sessions of their own
    (so that they alone decide which signal reaches them); without this, a parent killed
    with SIGKILL would leave its experiments training unattended. None elsewhere.
    The function only calls prctl, which is safe between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


__all__ = ["StopRequest", "parent_death_signal"]
