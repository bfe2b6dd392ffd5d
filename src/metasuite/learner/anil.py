"""ANIL (Raghu et al. 2020, "Rapid learning or feature reuse?"): the inner loop adapts
only the final classifier; the body is learned by the outer loop alone.

The math is MAML's (:func:`metasuite.learner.reference.adapt`) with fewer adapted
names, so every backend, the grouped CPU network included, runs it unchanged: the inner
gradient is taken with respect to the classifier only, so the support backward stops
at the features instead of running through every convolution.
"""

from __future__ import annotations

from metasuite.errors import ConfigError
from metasuite.learner.backbones import MetaBackbone
from metasuite.learner.models import HEAD_NAMES
from metasuite.learner.system import MamlSystem


def head_parameter_names(net: MetaBackbone) -> tuple[str, ...]:
    """The classifier's tensors: the reference network's ``linear``, or a module's head
    (named in the config, else its last linear layer with one output per way)."""
    names = net.head_names
    if not names:
        raise ConfigError(
            f"head: backbone {net.describe().get('name')!r} has no classifier layer for ANIL to "
            "adapt; name it in 'head'"
        )
    return names


class AnilSystem(MamlSystem):
    """MAML whose inner loop adapts the head only; LSLR, MSL, BN options as MAML++."""

    META_LEARNER = "anil"

    def adapted_parameter_names(self) -> tuple[str, ...]:
        return head_parameter_names(self.net)


__all__ = ["HEAD_NAMES", "AnilSystem", "head_parameter_names"]
