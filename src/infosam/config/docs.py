"""The option list of ``infosam train --help``: every ``section.option`` with its default and its one-line doc,
read from the field docstrings of the sections' source."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from . import root, sections
from .loading import _is_dataclass_type
from .root import Config


def option_docs() -> list[tuple[str, Any, str]]:
    """Every ``section.option`` with its default and its one-line doc (read from the field docstrings of
    :mod:`infosam.config.sections` and :mod:`infosam.config.root`), in declaration order; used by
    ``infosam train --help``."""
    import ast
    import inspect

    nodes = [node for module in (sections, root) for node in ast.parse(inspect.getsource(module)).body]
    docs: dict[str, dict[str, str]] = {}
    for node in nodes:
        if not isinstance(node, ast.ClassDef):
            continue
        body, fields = node.body, {}
        for stmt, nxt in zip(body, body[1:], strict=False):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                    fields[stmt.target.id] = " ".join(str(nxt.value.value).split())
        docs[node.name] = fields
    rows = []
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        if not _is_dataclass_type(cls):
            rows.append((section.name, _default(section), docs["Config"].get(section.name, "")))
            continue
        for f in dataclasses.fields(cls):  # defaults read from the fields: no section is built (no imports)
            rows.append((f"{section.name}.{f.name}", _default(f), docs[cls.__name__].get(f.name, "")))
    return rows


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default
