"""Typed options from YAML-ish values: the one type checker and the one ``a.b=value`` parser of the package.

Both the training config (:mod:`infosam.config`) and the PEFT methods' options (:mod:`infosam.peft`) go through
here, so an option is accepted or refused by the same rules wherever it is given (YAML file, ``--set``,
``--set-peft``, a Python dict).
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal

import yaml


class OptionError(ValueError):
    """An option with a wrong type, a value out of range or a bad ``a.b=value`` form; the message names it."""


def check_value(name: str, tp: Any, value: Any) -> Any:
    """``value`` converted to the annotation ``tp``, or :class:`OptionError` naming option ``name``.

    Rules: ``bool`` takes only true/false; ``int`` only integers (not booleans); ``float`` any finite number
    (ints and numeric strings such as ``"2e-4"``, which YAML 1.1 reads as a string, are converted; ``inf`` and
    ``nan`` are refused); ``str`` only strings; ``Literal[...]`` one of its values; ``list[T]`` / ``tuple[T, ...]``
    a list or tuple of ``T``; ``dict`` a mapping; ``X | None`` also ``None``; ``Any`` anything.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_value(name, arg, value)
            except OptionError as err:
                errors.append(str(err))
        raise OptionError(errors[0] if len(errors) == 1 else f"{name}: invalid value {value!r}")
    if origin is Literal:
        choices = list(typing.get_args(tp))
        if value not in choices:
            raise OptionError(f"{name} must be one of {choices}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise OptionError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise OptionError(f"{name} must be an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise OptionError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(number):
            raise OptionError(f"{name} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        hint = " (quote it: YAML reads yes/no/on/off as booleans)" if isinstance(value, bool) else ""
        raise OptionError(f"{name} must be a string, got {value!r}{hint}")
    if origin in (list, tuple):
        args = typing.get_args(tp)
        item = args[0] if args else Any
        if not isinstance(value, (list, tuple)):
            raise OptionError(f"{name} must be a list, got {value!r}")
        items = [check_value(f"{name}[{i}]", item, v) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise OptionError(f"{name} must be a mapping, got {value!r}")
        return {str(k): (dict(v) if isinstance(v, dict) else v) for k, v in value.items()}
    raise TypeError(f"unsupported option annotation {tp!r} for {name}")  # pragma: no cover


def parse_assignment(
    item: str, *, what: str = "override", form: str = "section.option=value (e.g. train.lr=1e-4)"
) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> ``(["a", "b", "c"], value)``, the value read as YAML (``1e-4`` a number, ``true`` a
    boolean, ``[a, b]`` a list, nothing ``None``).

    Args:
        item: the assignment.
        what, form: how the error messages call the assignment and show its form.
    Raises:
        OptionError: no ``=``, an empty key part, or a value that is not valid YAML.
    """
    if "=" not in item:
        raise OptionError(f"{what} {item!r} must look like {form}")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if any(not part.strip() for part in parts):
        raise OptionError(f"{what} {item!r}: empty option name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise OptionError(f"{what} {item!r}: value is not valid YAML: {err}") from err
    return [p.strip() for p in parts], value


def set_dotted(data: dict, parts: list[str], value: Any) -> dict:
    """A copy of the nested dict ``data`` with ``data[parts[0]][parts[1]]... = value`` (missing levels made)."""
    out = dict(data)
    node = out
    for part in parts[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[parts[-1]] = value
    return out
