"""SIGTERM / SIGINT as a request to stop at the next safe point, not a crash.

Cluster schedulers send SIGTERM before killing a job at its time limit, and people press
Ctrl-C. Either way the meta-iteration under way is finished and checkpointed, so no
work is lost. A second signal means "now": the default handlers are put back after the
first, so a second Ctrl-C raises KeyboardInterrupt and a second SIGTERM terminates.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager that records the first SIGTERM/SIGINT instead of dying."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def __enter__(self) -> StopRequest:
        # Handlers can only be installed from the main thread (e.g. not under some
        # test runners' worker threads); elsewhere signals keep their defaults.
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
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


__all__ = ["StopRequest"]
