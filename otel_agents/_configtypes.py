# SPDX-License-Identifier: Apache-2.0
"""Typed configuration: YAML mappings decoded into frozen dataclasses.

Like the Collector's mapstructure decoding into ``createDefaultConfig()``: keys that are absent
keep the dataclass default, unknown keys are errors, and every error names the full key path
(``processors.anomaly.warmup: expected an integer, got 'ten'``).

Durations and sizes are declared with field metadata::

    @dataclasses.dataclass(frozen=True)
    class Config:
        decision_wait: float = dataclasses.field(default=10.0, metadata=DURATION)  # "10s"
        max_bytes: int = dataclasses.field(default=1 << 30, metadata=SIZE)          # "1GiB"
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from otel_agents._errors import ConfigError

__all__ = ["DURATION", "SIZE", "decode", "parse_duration", "parse_size"]

DURATION: Mapping[str, str] = {"unit": "duration"}
SIZE: Mapping[str, str] = {"unit": "size"}

T = TypeVar("T")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2,
    "GB": 1000**3, "GiB": 1024**3,
}


def parse_duration(value: object, path: str = "value") -> float:
    """``"250ms"``, ``"10s"``, ``"5m"``, ``"1h"``, ``"7d"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected a duration such as '10s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ConfigError(f"{path}: expected a duration such as '10s', got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{path}: must not be negative, got {value!r}")
    return seconds


def parse_size(value: object, path: str = "value") -> int:
    """``"64MiB"``, ``"1GB"``, ``"512KiB"`` or a number of bytes → bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected a size such as '64MiB', got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    else:
        raise ConfigError(f"{path}: expected a size such as '64MiB', got {value!r}")
    if size < 0:
        raise ConfigError(f"{path}: must not be negative, got {value!r}")
    return size


def decode(cls: type[T], data: object, path: str = "") -> T:
    """Decode ``data`` (a mapping from YAML, or ``None`` for all defaults) into ``cls``.

    Raises:
        ConfigError: naming the key path and what was expected.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {_kind(data)}")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(
            f"{_join(path, unknown[0])}: unknown key (known keys: {known})"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        field = fields[name]
        kwargs[name] = _convert(hints[name], value, _join(path, name), field.metadata)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or '<root>'}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        problems = validate()
        if problems:
            raise ConfigError("; ".join(_join(path, p) for p in problems))
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _convert(tp: Any, value: object, path: str, metadata: Mapping[str, Any]) -> Any:
    unit = metadata.get("unit")
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) != len(get_args(tp)):
                return None
            raise ConfigError(f"{path}: must not be null")
        return _convert(args[0], value, path, metadata)
    if unit == "duration":
        return parse_duration(value, path)
    if unit == "size":
        return parse_size(value, path)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin in (list, tuple, typing.Sequence, typing.List, typing.Tuple):  # noqa: UP006
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {_kind(value)}")
        (item_tp, *_rest) = get_args(tp) or (Any,)
        items = [_convert(item_tp, v, f"{path}[{i}]", {}) for i, v in enumerate(value)]
        return tuple(items) if origin in (tuple, typing.Tuple) else items  # noqa: UP006
    if origin in (dict, Mapping, typing.Dict):  # noqa: UP006
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_kind(value)}")
        key_tp, val_tp = get_args(tp) or (str, Any)
        return {
            _convert(key_tp, k, path, {}): _convert(val_tp, v, _join(path, str(k)), {})
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return decode(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_kind(value)}")
        return value
    return value
