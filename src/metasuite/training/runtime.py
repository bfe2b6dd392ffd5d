"""The process around an experiment: which devices, which seeds, how many threads.

Kept apart from the training loop so that device mistakes are caught (and reported as
one line) before any data is loaded, and so that the RNG state that exact resume needs
is captured and restored in one place.
"""

from __future__ import annotations

import os
import random
import warnings
from typing import Any

import numpy as np
import torch

from metasuite.errors import UserError
from metasuite.training.devices import GIVEN_ENV, DeviceSpecError, gpu_indices, parse_devices

THREADS_ENV = "METASUITE_NUM_THREADS"


def resolve_devices(spec: str | None) -> list[torch.device]:
    """Turn ``--gpus`` into devices.

    ``"cpu"`` → the CPU; ``"0,1"`` → those CUDA devices (each must exist; ids as
    :mod:`metasuite.training.devices` defines them); None → GPU 0
    when CUDA is available, else the CPU. A GPU id on a machine without CUDA is an error
    rather than a silent fall-back to the CPU, which would make a cluster job crawl.
    """
    if spec is None:
        return [torch.device("cuda", 0)] if torch.cuda.is_available() else [torch.device("cpu")]
    text = spec.strip().lower()
    words = [part.strip() for part in text.split(",")]
    try:
        ids = gpu_indices(parse_devices(words))
    except DeviceSpecError as exc:
        if exc.problem == "twice":
            raise UserError(f"--gpus {spec!r}: a GPU id is listed twice") from None
        raise UserError(
            f"--gpus {spec!r}: expected 'cpu' or comma-separated GPU ids such as 0,1"
        ) from None
    if not ids:
        return [torch.device("cpu")]
    given = os.environ.get(GIVEN_ENV)
    if given:
        # Started by an experiment script, which made the GPUs given to it the only
        # visible ones (renumbered from 0): name what the user typed.
        if not torch.cuda.is_available() or torch.cuda.device_count() < len(ids):
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            raise UserError(
                f"{given}: no such GPU on this machine, or no CUDA (torch "
                f"{torch.__version__} finds no device for CUDA_VISIBLE_DEVICES={visible}); "
                "give GPU ids that `nvidia-smi -L` lists, or cpu"
            )
        return [torch.device("cuda", i) for i in ids]
    check_gpu_ids(ids, f"--gpus {spec}")
    return [torch.device("cuda", i) for i in ids]


def check_gpu_ids(ids: list[int], named: str) -> None:
    """Every GPU id must exist here; ``named`` is how the user gave them (the option)."""
    if not ids:
        return
    if not torch.cuda.is_available():
        raise UserError(
            f"{named}: CUDA is not available on this machine (torch {torch.__version__}); use cpu"
        )
    count = torch.cuda.device_count()
    for i in ids:
        if i >= count:
            raise UserError(
                f"{named}: there is no GPU {i} (this machine has {count}: ids 0..{count - 1})"
            )


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def env_int(name: str, expected: str = "an integer") -> int | None:
    """``$name`` as an integer (None when unset or empty): a setting made for a whole
    cluster job, so a typo in it is a one-line user error naming the variable."""
    text = os.environ.get(name)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(f"${name}={text!r}: expected {expected}") from None


def configure(devices: list[torch.device], num_threads: int | None = None) -> None:
    """Thread count and determinism for this process.

    On the CPU, deterministic algorithms make a resumed run match an uninterrupted one
    bit for bit. ``num_threads`` (or ``$METASUITE_NUM_THREADS``) caps intra-op threads,
    e.g. when several experiments share a machine.
    """
    if num_threads is None:
        num_threads = env_int(THREADS_ENV, "a positive integer")
    if num_threads is not None:
        if num_threads < 1:
            raise UserError(f"thread count must be >= 1, got {num_threads}")
        torch.set_num_threads(num_threads)
    if all(d.type == "cpu" for d in devices):
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = False


def numerics(
    backend: str, precision: str, device: torch.device, world_size: int = 1
) -> dict[str, Any]:
    """What fixes a run's floating-point results besides the config's training settings:
    the inner-loop backend as resolved for the device (``auto`` is not a backend), the
    precision, on the CPU the intra-op thread count per rank, and the world size (both
    change the order of summation). Recorded in every checkpoint and the manifest
    (``world_size`` only when above 1, so a one-process run records what it always did).
    See :func:`execution_changes` for what a resume may change."""
    out: dict[str, Any] = {"backend": backend, "precision": precision}
    if device.type == "cpu":
        out["num_threads"] = torch.get_num_threads()
    if world_size > 1:
        out["world_size"] = world_size
    return out


EXECUTION_KEYS = ("backend", "num_threads", "world_size")
"""The :func:`numerics` entries a resume may change (precision is a config setting)."""


def execution_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """``"world_size: 1 -> 2"`` lines for the :data:`EXECUTION_KEYS` that differ between
    a checkpoint's numerics (``old``) and this run's; a checkpoint from before they were
    recorded (``old`` None) has nothing to compare. A missing world size is 1.

    The one rule for what a resume may change: how the run is *executed* (the resolved
    backend, CPU threads per rank, the world size) may change; each change is said once
    and recorded in manifest.json, and the run then matches an uninterrupted one to float
    precision, not bit for bit. A change of a *training setting* (the config, precision
    included) is refused unless ``--force`` (recorded as well)."""
    if not old:
        return []
    defaults = {"world_size": 1}
    changes = []
    for key in EXECUTION_KEYS:
        before, after = old.get(key, defaults.get(key)), new.get(key, defaults.get(key))
        if before is not None and after is not None and before != after:
            changes.append(f"{key}: {before} -> {after}")
    return changes


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the training may draw from, as tensors and numbers only, so that it
    survives ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            # Nothing in metasuite draws from the CUDA generators today (tasks and init
            # use their own seeded generators), so this only matters to added code.
            warnings.warn(
                f"checkpoint holds CUDA RNG states for {len(cuda_states)} GPU(s) but "
                f"{torch.cuda.device_count()} are visible; CUDA RNG states not restored",
                stacklevel=2,
            )


__all__ = [
    "capture_rng_state",
    "configure",
    "resolve_devices",
    "restore_rng_state",
    "seed_everything",
]
