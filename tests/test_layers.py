"""The package's layers, guarded: every module imports on its own, no import cycles, and
imports run only down the layer order.

    base (errors, config, fsutil, jsontext, progress, selection, stats, text, the package)
      <- data <- learner <- training <- {suite, results} <- search <- commands
      <- entry (cli, __main__)

suite and results sit side by side and do not import each other; base modules import
only base modules. ``cli`` is the entry point (it finds the sub-commands in
``commands/`` by name), so it and ``__main__`` form the top layer above ``commands``:
no module may import them, and they may import anything below.

Imports are read from each module's syntax tree, all of them: at the top, inside
functions (lazy imports) and under ``if TYPE_CHECKING:``, because each of those is a
dependency a reader has to follow, and a lazy import is a cycle that merely has not
bitten yet. A module missing from the layer table fails the guard until it is given a
place.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import metasuite

PACKAGE = "metasuite"
SRC = Path(metasuite.__file__).parent

BASE_MODULES = frozenset(
    {"errors", "config", "fsutil", "jsontext", "progress", "selection", "stats", "text"}
)
PACKAGE_LAYERS = {
    "data": 1,
    "learner": 2,
    "training": 3,
    "suite": 4,
    "results": 4,
    "search": 5,
    "commands": 6,
}
ENTRY_MODULES = frozenset({"cli", "__main__"})
ENTRY_LAYER = 7
LAYER_PICTURE = (
    "base <- data <- learner <- training <- {suite, results} <- search <- commands <- cli/__main__"
)


@dataclass(frozen=True)
class Import:
    """One import statement of one module, resolved to the package module it loads."""

    importer: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.importer} imports {self.target} ({self.path.name}:{self.line})"


def modules_under(src: Path, package: str) -> dict[str, Path]:
    """Every module of the package (``__main__`` included) by dotted name."""
    found = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path], package: str) -> list[Import]:
    """The package modules ``name`` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # ``from pkg import mod`` loads the module pkg.mod; ``from mod import name``, mod.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        for target in targets:
            if target == package or target.startswith(package + "."):
                found.append(Import(name, target, path, node.lineno))
    return found


def layer_of(name: str, package: str) -> tuple[int, str]:
    """(rank, group) of a module: imports go to a lower rank, or stay within the group."""
    parts = name.split(".")[1:]
    if not parts or parts[0] in BASE_MODULES:
        return 0, "base"
    head = parts[0]
    if head in ENTRY_MODULES:
        return ENTRY_LAYER, "entry"
    if head in PACKAGE_LAYERS:
        return PACKAGE_LAYERS[head], head
    raise LookupError(
        f"{name} is in no layer: place {package}.{head} in tests/test_layers.py ({LAYER_PICTURE})"
    )


def all_imports(src: Path, package: str) -> tuple[dict[str, Path], list[Import]]:
    modules = modules_under(src, package)
    edges = [i for n, p in modules.items() for i in imports_of(n, p, modules, package)]
    return modules, edges


def layer_violations(src: Path, package: str) -> list[str]:
    """One line per import against the layer order (or of a module that does not exist)."""
    modules, edges = all_imports(src, package)
    problems = []
    for name in modules:
        try:
            layer_of(name, package)
        except LookupError as exc:
            problems.append(str(exc))
    for edge in edges:
        if edge.target not in modules:
            problems.append(f"{edge}: there is no such module")
            continue
        try:
            (low, low_group), (high, high_group) = (
                layer_of(edge.target, package),
                layer_of(edge.importer, package),
            )
        except LookupError:
            continue  # reported above
        if low > high:
            problems.append(f"{edge}: an import up the layers ({LAYER_PICTURE})")
        elif low == high and low_group != high_group:
            problems.append(f"{edge}: {low_group} and {high_group} must not import each other")
    return problems


def import_cycles(src: Path, package: str) -> list[str]:
    """One line per import cycle, naming each import along it (Tarjan's components)."""
    modules, edges = all_imports(src, package)
    graph: dict[str, list[Import]] = {name: [] for name in modules}
    for edge in edges:
        if edge.target in graph and edge.target != edge.importer:
            graph[edge.importer].append(edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(" -> ".join(map(str, _cycle_through(c, graph))) for c in components)


def _cycle_through(component: list[str], graph: dict[str, list[Import]]) -> list[Import]:
    """The shortest cycle from the component's first module back to it (breadth first)."""
    start, members = component[0], set(component)
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for edge in graph[node]:
            if edge.target == start:
                return [*paths[node], edge]
            if edge.target in members and edge.target not in paths:
                paths[edge.target] = [*paths[node], edge]
                queue.append(edge.target)
    raise AssertionError(f"no cycle through {start}")  # a component of >1 always has one


# ---------------------------------------------------------------------- the guard


def test_imports_follow_the_layer_order() -> None:
    problems = layer_violations(SRC, PACKAGE)
    assert not problems, "\n".join(problems)


def test_no_import_cycles() -> None:
    cycles = import_cycles(SRC, PACKAGE)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _importable_modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.walk_packages(metasuite.__path__, PACKAGE + ".")
        if m.name.rsplit(".", 1)[-1] != "__main__"
    )


@pytest.mark.slow
def test_every_module_imports_on_its_own() -> None:
    """Each module first, in a fresh interpreter: an import that works only when some
    other module happened to be imported before it (a cycle entered from the wrong
    end) fails here. One interpreter per module, two at a time."""
    names = _importable_modules()
    assert len(names) > 40 and f"{PACKAGE}.training.runner" in names
    failures = []
    for first in range(0, len(names), 2):
        procs = [
            (name, subprocess.Popen(
                [sys.executable, "-c", f"import {name}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            ))
            for name in names[first : first + 2]
        ]  # fmt: skip
        for name, proc in procs:
            _, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                last = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
                failures.append(f"python -c 'import {name}': {last}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------- the guard's own test


def _tree(root: Path, files: dict[str, str]) -> Path:
    src = root / "pkg"
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def test_guard_names_an_upward_import_a_lazy_cycle_and_sibling_imports(tmp_path) -> None:
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "__main__.py": "from pkg.cli import main\n",
            "cli.py": "def main():\n    import pkg.commands.train\n",
            "errors.py": "",
            "config.py": "from pkg.errors import X\n",
            "stats.py": "def f():\n    from pkg.data import tasks\n",  # base -> data
            "data/__init__.py": "",
            "data/tasks.py": "from .. import config\nfrom ..learner import models\n",  # up
            "learner/__init__.py": "",
            "learner/models.py": "from pkg.data.tasks import T\n",
            "training/__init__.py": "",
            "training/a.py": "from pkg.training.b import B\n",
            # A cycle through a lazy import and a TYPE_CHECKING import.
            "training/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.training.c import C\n"
            ),
            "training/c.py": "def g():\n    from . import a\n",
            "suite/__init__.py": "",
            "suite/x.py": "from pkg.results import y\n",  # sibling
            "results/__init__.py": "",
            "results/y.py": "import pkg.training.a\n",
            "commands/__init__.py": "",
            "commands/train.py": "from pkg.suite import x\nfrom pkg.results.y import Y\n",
            "oddball.py": "",
        },
    )
    problems = layer_violations(src, "pkg")
    assert problems == [
        f"pkg.oddball is in no layer: place pkg.oddball in tests/test_layers.py ({LAYER_PICTURE})",
        f"pkg.data.tasks imports pkg.learner.models (tasks.py:2): an import up the layers "
        f"({LAYER_PICTURE})",
        f"pkg.stats imports pkg.data.tasks (stats.py:2): an import up the layers ({LAYER_PICTURE})",
        "pkg.suite.x imports pkg.results.y (x.py:1): results and suite must not import each other",
    ]
    cycles = import_cycles(src, "pkg")
    assert cycles == [
        " -> ".join(
            [
                "pkg.data.tasks imports pkg.learner.models (tasks.py:2)",
                "pkg.learner.models imports pkg.data.tasks (models.py:1)",
            ]
        ),
        " -> ".join(
            [
                "pkg.training.a imports pkg.training.b (a.py:1)",
                "pkg.training.b imports pkg.training.c (b.py:3)",
                "pkg.training.c imports pkg.training.a (c.py:2)",
            ]
        ),
    ]


def test_guard_passes_a_tree_that_keeps_the_order(tmp_path) -> None:
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "cli.py": "def main():\n    from pkg.commands import train\n",
            "errors.py": "",
            "data/__init__.py": "from pkg import errors\n",
            "training/__init__.py": "",
            "training/run.py": "from pkg.data import X\nfrom . import lock\n",
            "training/lock.py": "from ..errors import E\n",
            "commands/__init__.py": "",
            "commands/train.py": "from pkg.training.run import r\n",
        },
    )
    assert layer_violations(src, "pkg") == []
    assert import_cycles(src, "pkg") == []
