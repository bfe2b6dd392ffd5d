"""JSON text read strictly: one parser for every JSON file metasuite reads (configs,
rendered templates, manifests, state files, the status and report views).

Python's ``json`` accepts two inputs that look fine and are not: an object that names a
key twice (it silently keeps the last: a config saying ``"batch_size": 2`` and later
``"batch_size": 8`` trains with 8) and nesting deep enough to exhaust the interpreter's
stack (a ``RecursionError`` traceback instead of an error line). Both become a
:class:`ValueError` here, as a syntax error already is, so callers keep one ``except``.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 100
"""Deepest nesting of arrays and objects accepted: a metasuite file nests 5 levels at
most; the margin is for users' own keys, the bound keeps every reader off the stack
limit (``json`` itself, and any code that walks the value afterwards)."""


class JsonTextError(ValueError):
    """JSON that does not parse, repeats a key or nests too deeply; ``str()`` is one
    line without the file name (callers prefix it); ``lineno``: the line of a syntax
    error, else None."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonTextError(
                f"key {key!r} appears twice in one object (JSON would keep the last)"
            )
        out[key] = value
    return out


def _depth(text: str) -> int:
    """Deepest bracket nesting outside strings, in one pass (no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(text: str) -> Any:
    """Parse ``text``; :class:`JsonTextError` (a ``ValueError``) with a one-line reason
    for bad syntax (with its line number), a repeated key, or nesting beyond
    :data:`MAX_DEPTH`."""
    if text.count("[") + text.count("{") > MAX_DEPTH:  # cheap: most files stop here
        deepest = _depth(text)
        if deepest > MAX_DEPTH:
            raise JsonTextError(f"nested {deepest:,} levels deep; at most {MAX_DEPTH}")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise JsonTextError(f"not valid JSON (line {exc.lineno}: {exc.msg})", exc.lineno) from None
