"""The one place a config's ``meta_learner`` becomes a learner object.

Every learner shares :class:`metasuite.learner.system.MamlSystem`'s state layout,
checkpoint format, evaluation and backends; each module beside this one holds the
kernel that differs (:mod:`.meta_sgd`, :mod:`.anil`, :mod:`.reptile`).
"""

from __future__ import annotations

import torch

from metasuite.config import ExperimentConfig
from metasuite.errors import ConfigError
from metasuite.learner.anil import AnilSystem
from metasuite.learner.meta_sgd import MetaSgdSystem
from metasuite.learner.reptile import ReptileSystem
from metasuite.learner.system import MamlSystem

LEARNERS: dict[str, type[MamlSystem]] = {
    "maml": MamlSystem,
    "meta_sgd": MetaSgdSystem,
    "anil": AnilSystem,
    "reptile": ReptileSystem,
}


def build_learner(
    cfg: ExperimentConfig, device: torch.device | str = "cpu", backend: str | None = None
) -> MamlSystem:
    """The learner ``cfg.meta_learner`` names, on ``device``, with ``backend`` (default:
    the config's)."""
    try:
        cls = LEARNERS[cfg.meta_learner]
    except KeyError:
        raise ConfigError(
            f"meta_learner must be one of {', '.join(LEARNERS)}; got {cfg.meta_learner!r}"
        ) from None
    return cls(cfg, device, backend)


__all__ = ["LEARNERS", "build_learner"]
