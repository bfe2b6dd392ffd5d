"""Tolerances for comparing floats computed two ways (one process vs several ranks, the
fast path vs the reference, a batch vs one task at a time), defined once.

Why these numbers: two float32 computations of the same quantity that add their terms
in a different order (another world size, another kernel blocking, another CPU's SIMD
width: AVX-512 on one machine, AVX2 on another) agree only to a few ulps of the
*magnitude of the terms*, not of the result. float32's ulp at 1 is 1.2e-7, so:

- ``FLOAT32_RTOL`` / ``FLOAT32_ATOL``: a float32 value reached by a different summation
  order (a few dozen terms, a few steps of Adam on top): relative 1e-5 (~80 ulps),
  absolute 1e-6 for values near zero. Seen: 1.5e-8 after 3 meta-iterations on one CPU;
  the margin is for other CPUs.
- A *spread* (a standard deviation) of such values is an ill-conditioned difference:
  its error is the error of the values, i.e. relative to their *mean*, not to the std
  itself (a loss near 1.6 with a std of 0.07 moves the std by 2e-7, 3e-6 of the std: the
  AMD EPYC failure of ``train_loss_std`` at ``rel=1e-6``). :func:`assert_rows_agree`
  therefore scales a ``*_std`` column's tolerance by its ``*_mean`` column.

A comparison that must be exact (the same computation on the same machine, a resumed
run against an uninterrupted one on the CPU) uses ``torch.equal`` / ``==``, not these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

FLOAT32_RTOL = 1e-5
FLOAT32_ATOL = 1e-6


def float32_reordered(expected: float, scale: float | None = None):
    """``pytest.approx`` for a float32 quantity computed in another summation order;
    ``scale``: the magnitude of the terms it came from (default: the value itself)."""
    magnitude = abs(expected) if scale is None else max(abs(scale), abs(expected))
    return pytest.approx(
        expected, rel=FLOAT32_RTOL, abs=max(FLOAT32_ATOL, FLOAT32_RTOL * magnitude)
    )


def assert_rows_agree(got: Mapping[str, str | float], want: Mapping[str, str | float]) -> None:
    """One summary row (``summary_statistics.csv``) equal to another up to float32
    summation order; ``*_std`` columns are held to their ``*_mean`` column's scale, and
    timing columns are not compared."""
    assert got.keys() == want.keys()
    for key, ref in want.items():
        if "time" in key:
            continue
        value, expected = float(got[key]), float(ref)
        if math.isnan(expected):
            assert math.isnan(value), key
            continue
        scale = None
        if key.endswith("_std") and key[: -len("_std")] + "_mean" in want:
            scale = float(want[key[: -len("_std")] + "_mean"])
        assert value == float32_reordered(expected, scale), key
