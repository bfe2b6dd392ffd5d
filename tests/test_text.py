"""metasuite.text.plural: the one way a count meets its noun."""

from __future__ import annotations

import pytest

from metasuite.text import plural


@pytest.mark.parametrize(
    ("count", "noun", "expected"),
    [
        (1, "experiment", "1 experiment"),
        (0, "experiment", "0 experiments"),
        (3, "experiment", "3 experiments"),
        (1, "class", "1 class"),
        (2, "class", "2 classes"),
        (2, "GPU", "2 GPUs"),
        (2, "batch", "2 batches"),
        (2, "epoch", "2 epochs"),  # issue 29: was "2 epoches"
    ],
)
def test_plural(count, noun, expected):
    assert plural(count, noun) == expected


def test_an_irregular_plural_is_given():
    assert plural(2, "index", "indices") == "2 indices"
    assert plural(1, "index", "indices") == "1 index"
