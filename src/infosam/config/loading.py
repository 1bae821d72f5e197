"""Reading and writing configs: a :class:`~infosam.config.root.Config` from a nested dict (unknown keys refused),
YAML files with their ``inherit`` chain, dotted overrides, and the resolved config back as YAML."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from ..options import check_value, parse_assignment, set_dotted
from .root import Config
from .sections import ConfigError, _Section


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a nested dict, refusing unknown keys (sections check their values)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = prefix.rstrip(".") or "the config"
        raise ConfigError(
            f"unknown option {prefix}{unknown[0]!s} in {where}; valid options: {', '.join(prefix + n for n in names)}"
        )
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if _is_dataclass_type(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{prefix}{key}.")
        elif issubclass(cls, _Section):
            kwargs[key] = value  # the section checks it
        else:
            kwargs[key] = check_value(f"{prefix}{key}", tp, value)
    return cls(**kwargs)


def config_from_dict(data: dict) -> Config:
    """Build a :class:`Config` from a nested dict (missing keys take their defaults); each section checks its own
    options, but what spans sections (:meth:`Config.validate`, e.g. the required ``data.path``) is not checked."""
    return _build(Config, data)


def config_to_dict(config: Config) -> dict:
    """The config as a plain nested dict (YAML-serialisable)."""
    return dataclasses.asdict(config)


# --------------------------------------------------------------------------------------------- YAML + overrides


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` laid over it: nested dicts merge key by key, any other value of ``update``
    replaces ``base``'s (lists too); neither argument is modified. How a config file's ``inherit`` chain and a grid
    arm's config combine."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config and the files it inherits from, merged (the file itself wins)."""
    path = Path(path).expanduser().resolve()
    if path in _seen:
        raise ConfigError(f"{path}: inherit loop through {' -> '.join(str(p) for p in _seen)}")
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.yaml"))[:6]
        hint = f"; it holds {', '.join(found)}" if found else ""
        raise ConfigError(f"config {path} is a directory, not a YAML file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of sections, got {type(data).__name__}")
    parents = data.pop("inherit", None) or []
    if isinstance(parents, str):
        parents = [parents]
    merged: dict = {}
    for parent in parents:
        merged = deep_merge(merged, read_yaml_tree(path.parent / parent, (*_seen, path)))
    return deep_merge(merged, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a nested dict."""
    for item in overrides:
        parts, value = parse_assignment(item)
        data = set_dotted(data, parts, value)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults), apply dotted overrides, and validate it."""
    data = read_yaml_tree(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    config = config_from_dict(data)
    config.validate()
    return config


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML text (loadable by :func:`load_config`)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable by :func:`load_config`), atomically."""
    from ..files import atomic_write_text

    atomic_write_text(path, config_to_yaml(config))


def validate_config(config: Config) -> None:
    """:meth:`Config.validate` (kept as a function for callers that hold a config from elsewhere)."""
    config.validate()
