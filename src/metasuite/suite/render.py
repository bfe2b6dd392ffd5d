"""Jinja rendering and generated files: strict templates, atomic writes, staleness checks.

The reference code filled ``$var$`` placeholders with ``str.replace``: a misspelt
placeholder stayed in the output and nobody noticed. Here every template runs under
``StrictUndefined``, so a missing variable is an error naming the template, its line and
the variable. Generated files are compared byte for byte (and, for scripts, by the
executable bit) before anything is written, so ``generate --check`` can tell CI exactly
which files are stale without touching them.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2

from metasuite.errors import ConfigError
from metasuite.fsutil import atomic_open

PACKAGE_TEMPLATES = Path(__file__).resolve().parent / "templates"
"""Templates shipped with metasuite (the experiment script); a suite folder overrides them."""


def _tojson(value: Any) -> str:
    """JSON for config templates: plain ``json.dumps``, unlike Jinja's HTML-escaping one."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # StrictUndefined: raises, naming the variable
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def _shquote(value: Any) -> str:
    """One shell word, whatever the value holds (spaces, quotes, ``$``)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return shlex.quote(str(value))


def make_environment(search_path: Sequence[Path]) -> jinja2.Environment:
    """A Jinja environment that fails loudly and renders the same bytes on every machine."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search_path]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=False,
    )
    env.filters["tojson"] = _tojson
    env.filters["shquote"] = _shquote
    return env


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    """The template line an exception was raised at (Jinja rewrites tracebacks to it)."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if filename is not None and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _find(env: jinja2.Environment, name: str) -> str:
    """The file a template name resolves to, for error messages."""
    for folder in getattr(env.loader, "searchpath", []):
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    return name


def render_string(
    env: jinja2.Environment, source: str, variables: Mapping[str, Any], what: str
) -> str:
    """Render a short pattern (a naming pattern, a template file name) given inline.

    ``what`` names the pattern in errors, e.g. ``"suite.toml [suite] naming"``.
    """
    try:
        return env.from_string(source).render(variables)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{what}: Jinja syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"{what}: {exc.message}") from None


def render_file(
    env: jinja2.Environment, name: str, variables: Mapping[str, Any], what: str = ""
) -> str:
    """Render the template file ``name`` from the environment's search path.

    Errors name the template file, the line when known, and ``what`` (which
    combination of the grid was being rendered).
    """
    suffix = f" ({what})" if what else ""
    try:
        template = env.get_template(name)
    except jinja2.TemplateNotFound:
        places = ", ".join(str(p) for p in getattr(env.loader, "searchpath", []))
        raise ConfigError(f"template {name!r} not found (looked in {places}){suffix}") from None
    except jinja2.TemplateSyntaxError as exc:
        where = _find(env, exc.filename or name)
        raise ConfigError(f"{where}:{exc.lineno}: Jinja syntax error: {exc.message}") from None
    except UnicodeDecodeError as exc:
        where = _find(env, name)
        raise ConfigError(
            f"{where}: not UTF-8 text (byte {exc.start}: {exc.reason}){suffix}"
        ) from None
    try:
        return template.render(variables)
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, template.filename)
        where = f"{template.filename}:{line}" if line else str(template.filename)
        raise ConfigError(f"{where}: {exc.message}{suffix}") from None
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{template.filename}: {exc}{suffix}") from None


# ----------------------------------------------------------------------- generated files

Status = Literal["unchanged", "stale", "missing"]


def relative_posix(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` with ``/``: generated files name each other this
    way, so they are the same bytes wherever the checkout lives."""
    return Path(os.path.relpath(path, start)).as_posix()


@dataclass(frozen=True)
class OutputFile:
    """One file a suite produces: where it goes, its exact bytes, whether it is a script."""

    path: Path
    content: bytes
    executable: bool = False

    def status(self) -> Status:
        """Compare with what is on disk, without writing anything."""
        try:
            current = self.path.read_bytes()
        except FileNotFoundError:
            return "missing"
        if current != self.content:
            return "stale"
        if self.executable and not os.stat(self.path).st_mode & stat.S_IXUSR:
            return "stale"
        return "unchanged"

    def write(self) -> None:
        """Write atomically (temp file, fsync, rename), scripts with mode 0755."""
        mode = 0o755 if self.executable else 0o644
        with atomic_open(self.path) as handle:
            handle.write(self.content)
            os.fchmod(handle.fileno(), mode)

    def diff(self, max_lines: int = 40) -> str:
        """A unified diff from the file on disk to the generated content (for --check)."""
        try:
            old = self.path.read_text(encoding="utf-8", errors="replace").splitlines(True)
        except FileNotFoundError:
            old = []
        new = self.content.decode("utf-8").splitlines(True)
        lines = list(
            difflib.unified_diff(old, new, f"{self.path} (on disk)", f"{self.path} (generated)")
        )
        if not lines and self.executable:
            return f"{self.path}: not executable (chmod +x, or run metasuite generate)\n"
        if len(lines) > max_lines:
            lines = [*lines[:max_lines], f"... ({len(lines) - max_lines} more diff lines)\n"]
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
