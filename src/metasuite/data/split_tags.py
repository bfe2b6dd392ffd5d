"""The split tag mixed into each task's seed, shared by the image and text samplers."""

from __future__ import annotations

SPLIT_TAGS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
"""Mixed into each task's seed so train task i and val task i differ even with one seed."""

__all__ = ["SPLIT_TAGS"]
