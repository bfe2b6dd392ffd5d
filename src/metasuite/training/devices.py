"""The device-id grammar, defined once: what ``X.sh 0 1``, ``run-suite --gpus`` and
``train --gpus`` accept.

A device word is ``cpu`` or a GPU id: ``0`` or a number of at most three digits without
a leading zero (``01``, ``1000``, ``-1`` and ``²`` are not ids; ``str.isdigit`` would take
the last). An id may appear once, and ``cpu`` stands alone. No words means the CPU.
Kept free of torch so that the launcher and run-suite parse ids without loading it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from metasuite.errors import UserError

CPU = "cpu"
GIVEN_ENV = "METASUITE_DEVICES_GIVEN"
"""Set by the experiment-script launcher to what the user typed (``X.sh 7``): the
trainer sees its GPUs renumbered from 0, so its device errors name this instead of a
``--gpus 0`` the user never wrote."""
_GPU_ID = re.compile(r"0|[1-9][0-9]{0,2}", re.ASCII)

Problem = Literal["not a device", "twice", "cpu with gpus"]


class DeviceSpecError(UserError):
    """A device list that breaks the grammar; ``problem`` and ``word`` let each command
    word the error for its own option, the message is the experiment script's."""

    def __init__(self, problem: Problem, word: str) -> None:
        self.problem = problem
        self.word = word
        messages = {
            "not a device": f"'{word}' is not a device: give GPU ids (e.g. 0 1) or cpu",
            "twice": f"device '{word}' is given twice",
            "cpu with gpus": "'cpu' cannot be combined with GPU ids",
        }
        super().__init__(messages[problem])


def is_gpu_id(word: str) -> bool:
    """True for ``0``, ``7``, ``12``, ``999``; false for ``01``, ``1000``, ``x``, ``cpu``."""
    return _GPU_ID.fullmatch(word) is not None


def parse_devices(words: Sequence[str]) -> tuple[str, ...]:
    """Check device words; ``()`` → ``("cpu",)``. Raises :class:`DeviceSpecError` at the
    first bad or repeated word (in order), then for ``cpu`` among GPU ids."""
    seen: list[str] = []
    for word in words:
        if word != CPU and not is_gpu_id(word):
            raise DeviceSpecError("not a device", word)
        if word in seen:
            raise DeviceSpecError("twice", word)
        seen.append(word)
    if not seen:
        return (CPU,)
    if len(seen) > 1 and CPU in seen:
        raise DeviceSpecError("cpu with gpus", CPU)
    return tuple(seen)


def gpu_indices(devices: Sequence[str]) -> list[int]:
    """The GPU ids of a parsed device list as integers (``[]`` for the CPU)."""
    return [] if tuple(devices) == (CPU,) else [int(d) for d in devices]


__all__ = ["CPU", "GIVEN_ENV", "DeviceSpecError", "gpu_indices", "is_gpu_id", "parse_devices"]
