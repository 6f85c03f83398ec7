"""Typed config sections: a dataclass per TOML table, checked at start-up, failing with the key's name.

Each output or source module owns its own small section dataclass (Frigate-style); `device/config.py`
composes them. This module is the one way a TOML table becomes a dataclass.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from edge_oneclass.device.errors import ConfigError

T = TypeVar("T")


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is Any:
        return True
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def parse_section(cls: type[T], data: dict[str, Any] | None, section: str) -> T:
    """Build dataclass `cls` from TOML table `data`; unknown keys and wrong types raise ConfigError.

    Validation beyond types belongs in the dataclass's `__post_init__`, raising ValueError; it is
    re-raised as ConfigError with the section name.
    """
    data = dict(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"[{section}] must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {section}.{unknown[0]}; valid keys in [{section}]: "
                          f"{', '.join(sorted(fields))}")
    for name, value in data.items():
        ann = hints[name]
        if not _type_ok(value, ann):
            raise ConfigError(f"{section}.{name} must be {_type_name(ann)}, got {value!r}")
        if _type_name(ann) == "float" or ann is float:
            data[name] = float(value)
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key {section}.{missing[0]}")
    try:
        return cls(**data)
    except ValueError as exc:
        raise ConfigError(f"[{section}] {exc}") from exc
