"""ANIL (Raghu et al. 2020, "Rapid learning or feature reuse?"): the inner loop adapts
only the final classifier; the body is learned by the outer loop alone.

The math is MAML's (:func:`metasuite.learner.reference.adapt`) with fewer adapted
names, so every backend, the grouped CPU network included, runs it unchanged: the inner
gradient is taken with respect to the classifier only, so the support backward stops
at the features instead of running through every convolution.
"""

from __future__ import annotations

from metasuite.learner.models import Backbone
from metasuite.learner.system import MamlSystem

HEAD_NAMES: tuple[str, ...] = ("linear.weight", "linear.bias")
"""The classifier: the only tensors ANIL adapts."""


def head_parameter_names(net: Backbone) -> tuple[str, ...]:
    """The classifier's weight and bias. Every :class:`Backbone` ends in one linear
    layer (there is no head-less network option), so this is always defined."""
    del net  # the same names for every architecture metasuite builds
    return HEAD_NAMES


class AnilSystem(MamlSystem):
    """MAML whose inner loop adapts the head only; LSLR, MSL, BN options as MAML++."""

    META_LEARNER = "anil"

    def adapted_parameter_names(self) -> tuple[str, ...]:
        return head_parameter_names(self.net)


__all__ = ["HEAD_NAMES", "AnilSystem", "head_parameter_names"]
