"""The one place a config's ``meta_learner`` becomes a learner object.

Every learner drives the builder's one interface through
:class:`metasuite.learner.base.LearnerBase` (state layout, checkpoint checks, Adam and
the schedule). The MAML family shares :class:`metasuite.learner.system.MamlSystem`'s
inner loop and backends; each module beside this one holds the kernel that differs
(:mod:`.meta_sgd`, :mod:`.anil`, :mod:`.reptile`); :mod:`.protonet` and :mod:`.baseline`
have no inner loop.
"""

from __future__ import annotations

import torch

from metasuite.config import ExperimentConfig
from metasuite.errors import ConfigError
from metasuite.learner.anil import AnilSystem
from metasuite.learner.base import LearnerBase
from metasuite.learner.baseline import BaselinePlusPlusSystem, BaselineSystem
from metasuite.learner.meta_sgd import MetaSgdSystem
from metasuite.learner.protonet import ProtoNetSystem
from metasuite.learner.reptile import ReptileSystem
from metasuite.learner.system import MamlSystem

LEARNERS: dict[str, type[LearnerBase]] = {
    "maml": MamlSystem,
    "meta_sgd": MetaSgdSystem,
    "anil": AnilSystem,
    "reptile": ReptileSystem,
    "protonet": ProtoNetSystem,
    "baseline": BaselineSystem,
    "baseline_pp": BaselinePlusPlusSystem,
}


def build_learner(
    cfg: ExperimentConfig,
    device: torch.device | str = "cpu",
    backend: str | None = None,
    *,
    num_labels: int | None = None,
) -> LearnerBase:
    """The learner ``cfg.meta_learner`` names, on ``device``, with ``backend`` (default:
    the config's). ``num_labels`` is the training split's label count
    (``TaskSampler.num_labels``), which learners that pre-train a classifier over all
    training classes need (``USES_SPLIT_LABELS``); the others ignore it."""
    try:
        cls = LEARNERS[cfg.meta_learner]
    except KeyError:
        raise ConfigError(
            f"meta_learner must be one of {', '.join(LEARNERS)}; got {cfg.meta_learner!r}"
        ) from None
    if cls.USES_SPLIT_LABELS:
        return cls(cfg, device, backend, num_labels=num_labels)  # type: ignore[call-arg]
    return cls(cfg, device, backend)  # type: ignore[call-arg]


__all__ = ["LEARNERS", "build_learner"]
