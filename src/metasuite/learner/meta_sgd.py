"""Meta-SGD (Li et al. 2017): a meta-learned inner learning rate per parameter element.

The math is MAML's (:func:`metasuite.learner.reference.adapt`): ``theta - lr * grad``
with ``lr`` now a tensor of ``theta``'s shape, so the shared inner update broadcasts it
and every backend runs it unchanged (the grouped CPU network widens the rates like the
tensors they scale, :func:`metasuite.learner.fast.task_groups.widen_rates`). The rates
are always learned; with LSLR on there is one set per inner step (``[S, *shape]``),
otherwise one set shared by the steps (``[1, *shape]``). MSL, BNWB/BNRS and second
order combine as they do for MAML++.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from metasuite.learner.models import Params
from metasuite.learner.system import MamlSystem


def init_elementwise_rates(
    params: Mapping[str, torch.Tensor], inner_names: Sequence[str], steps: int, init_lr: float
) -> Params:
    """One rate per element of each adapted tensor per step, all ``init_lr``."""
    return {
        name: torch.full((steps, *params[name].shape), float(init_lr), dtype=params[name].dtype)
        for name in inner_names
    }


class MetaSgdSystem(MamlSystem):
    """MAML with per-element learned inner rates; everything else as MamlSystem."""

    META_LEARNER = "meta_sgd"

    def rates_are_learned(self) -> bool:
        """Always: learning the rates is what Meta-SGD is."""
        return True

    def initial_rates(self) -> Params:
        steps = (
            self.cfg.number_of_training_steps_per_iter
            if self.cfg.learnable_per_layer_per_step_inner_loop_learning_rate
            else 1
        )
        return init_elementwise_rates(
            self.params, self.inner_names, steps, self.cfg.init_inner_loop_learning_rate
        )


__all__ = ["MetaSgdSystem", "init_elementwise_rates"]
