# SPDX-License-Identifier: Apache-2.0
"""OTLP/JSON ↔ protobuf, as the OTLP specification ("JSON Protobuf Encoding") defines it.

OTLP/JSON is the proto3 JSON mapping with deviations that plain ``json_format`` gets wrong
(reliability.md §0.8: a naive parse turns a hex trace ID into 24 bytes):

* ``traceId`` / ``spanId`` / ``parentSpanId`` are **hex** strings, not base64 (other ``bytes``
  fields, e.g. ``bytesValue``, stay base64);
* enum values MUST be integers — names are refused;
* keys MUST be lowerCamelCase — the original snake_case field names are refused (they are not
  "unknown" fields: they name a known field in a form the spec forbids);
* unknown fields MUST be ignored;
* 64-bit integers may be numbers or decimal strings.

The decoder walks the message descriptors directly (no intermediate ``ParseDict``), so it is a
single pass, and it caps message nesting at upb's depth (100) so JSON and protobuf requests hit
the same nesting limit.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from otel_agents._errors import InvalidRequestError

__all__ = ["MAX_MESSAGE_DEPTH", "decode", "encode", "to_json_obj"]

#: upb's default decode depth; deeper JSON is refused like deeper protobuf.
MAX_MESSAGE_DEPTH = 100

#: bytes fields carrying trace/span IDs, hex-encoded in OTLP/JSON.
_HEX_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})

_T = FieldDescriptor
_INT32 = frozenset({_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32})
_UINT32 = frozenset({_T.TYPE_UINT32, _T.TYPE_FIXED32})
_INT64 = frozenset({_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64})
_UINT64 = frozenset({_T.TYPE_UINT64, _T.TYPE_FIXED64})
_FLOAT = frozenset({_T.TYPE_DOUBLE, _T.TYPE_FLOAT})
_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


class _Fields:
    """Per-descriptor lookup tables (built once per message type)."""

    __slots__ = ("by_json", "proto_only")

    def __init__(self, desc: Descriptor) -> None:
        self.by_json: dict[str, FieldDescriptor] = {f.json_name: f for f in desc.fields}
        self.proto_only = frozenset(f.name for f in desc.fields if f.name != f.json_name)


_FIELDS: dict[str, _Fields] = {}


def _fields(desc: Any) -> _Fields:
    got = _FIELDS.get(desc.full_name)
    if got is None:
        got = _FIELDS[desc.full_name] = _Fields(desc)
    return got


def decode(data: bytes, message_class: type[Message]) -> Message:
    """Parse an OTLP/JSON body into a new ``message_class``.

    Raises:
        InvalidRequestError: not UTF-8, not JSON, wrong types, enum names, snake_case keys,
            malformed IDs, or nesting deeper than ``MAX_MESSAGE_DEPTH``; the message names
            the JSON path.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"JSON body is not valid UTF-8 at byte {exc.start}") from None
    if not text.strip():
        return message_class()  # an empty body is an empty request, as with protobuf
    try:
        obj = json.loads(text)
    except RecursionError:
        raise InvalidRequestError("JSON nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequestError(f"invalid JSON: {exc}") from None
    msg = message_class()
    if obj is None:
        return msg
    if not isinstance(obj, dict):
        raise InvalidRequestError(f"$: expected a JSON object, got {_kind(obj)}")
    _fill(msg, obj, "$", 1)
    return msg


def _fill(msg: Message, obj: Mapping[str, Any], path: str, depth: int) -> None:
    if depth > MAX_MESSAGE_DEPTH:
        raise InvalidRequestError(
            f"{path}: message nesting exceeds {MAX_MESSAGE_DEPTH} levels (attribute values "
            "nested deeper than about 47 arrays/maps are refused)"
        )
    table = _fields(msg.DESCRIPTOR)
    for key, value in obj.items():
        field = table.by_json.get(key)
        if field is None:
            if key in table.proto_only:
                raise InvalidRequestError(
                    f"{path}.{key}: OTLP/JSON keys must be lowerCamelCase "
                    f"({_camel(key)!r}), not the protobuf field name"
                )
            continue  # unknown fields MUST be ignored
        if value is None:
            continue  # null means "default"
        fpath = f"{path}.{key}"
        name = field.name
        if field.is_repeated:
            if not isinstance(value, list):
                raise InvalidRequestError(f"{fpath}: expected an array, got {_kind(value)}")
            target = getattr(msg, name)
            if field.type == _T.TYPE_MESSAGE:
                for i, item in enumerate(value):
                    if not isinstance(item, dict):
                        raise InvalidRequestError(
                            f"{fpath}[{i}]: expected an object, got {_kind(item)}"
                        )
                    _fill(target.add(), item, f"{fpath}[{i}]", depth + 1)
            else:
                target.extend(_scalar(field, item, f"{fpath}[{i}]") for i, item in enumerate(value))
        elif field.type == _T.TYPE_MESSAGE:
            if not isinstance(value, dict):
                raise InvalidRequestError(f"{fpath}: expected an object, got {_kind(value)}")
            sub = getattr(msg, name)
            sub.SetInParent()  # an empty object still selects a oneof member / sets presence
            _fill(sub, value, fpath, depth + 1)
        else:
            try:
                setattr(msg, name, _scalar(field, value, fpath))
            except (ValueError, TypeError) as exc:  # e.g. lone surrogates in a string
                raise InvalidRequestError(f"{fpath}: {exc}") from None


def _scalar(field: FieldDescriptor, value: Any, path: str) -> Any:
    t = field.type
    if t == _T.TYPE_STRING:
        if not isinstance(value, str):
            raise InvalidRequestError(f"{path}: expected a string, got {_kind(value)}")
        return value
    if t == _T.TYPE_BYTES:
        if not isinstance(value, str):
            raise InvalidRequestError(f"{path}: expected a string, got {_kind(value)}")
        if field.name in _HEX_FIELDS:
            try:
                return bytes.fromhex(value)
            except ValueError:
                raise InvalidRequestError(
                    f"{path}: trace and span IDs are hex strings in OTLP/JSON, got {value!r}"
                ) from None
        try:
            return base64.b64decode(_pad(value.replace("-", "+").replace("_", "/")), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"{path}: expected base64, got {value!r}") from None
    if t == _T.TYPE_BOOL:
        if not isinstance(value, bool):
            raise InvalidRequestError(f"{path}: expected true or false, got {_kind(value)}")
        return value
    if t == _T.TYPE_ENUM:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequestError(
                f"{path}: OTLP/JSON enum values must be integers, got {value!r}"
            )
        return value
    if t in _FLOAT:
        if isinstance(value, bool):
            raise InvalidRequestError(f"{path}: expected a number, got a boolean")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
            if value in special:
                return special[value]
            try:
                return float(value)
            except ValueError:
                pass
        raise InvalidRequestError(f"{path}: expected a number, got {value!r}")
    kind = (
        "int32"
        if t in _INT32
        else "uint32"
        if t in _UINT32
        else "int64"
        if t in _INT64
        else "uint64"
    )
    return _integer(value, kind, path)


def _integer(value: Any, kind: str, path: str) -> int:
    if isinstance(value, bool):
        raise InvalidRequestError(f"{path}: expected an integer, got a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        try:
            n = int(value, 10)
        except ValueError:
            raise InvalidRequestError(f"{path}: expected an integer, got {value!r}") from None
    else:
        raise InvalidRequestError(f"{path}: expected an integer, got {value!r}")
    lo, hi = _RANGES[kind]
    if not lo <= n <= hi:
        raise InvalidRequestError(f"{path}: {n} is out of range for {kind}")
    return n


def _pad(s: str) -> str:
    return s + "=" * (-len(s) % 4)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


# ------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """Serialize ``msg`` as OTLP/JSON (compact, UTF-8)."""
    return json.dumps(to_json_obj(msg), separators=(",", ":"), ensure_ascii=False).encode()


def to_json_obj(msg: Message) -> dict[str, Any]:
    """``msg`` as a JSON-ready dict in OTLP/JSON form (hex IDs, integer enums, camelCase)."""
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        key = field.json_name
        if field.is_repeated:
            if field.type == _T.TYPE_MESSAGE:
                out[key] = [to_json_obj(v) for v in value]
            else:
                out[key] = [_scalar_out(field, v) for v in value]
        elif field.type == _T.TYPE_MESSAGE:
            out[key] = to_json_obj(value)
        else:
            out[key] = _scalar_out(field, value)
    return out


def _scalar_out(field: FieldDescriptor, value: Any) -> Any:
    t = field.type
    if t == _T.TYPE_BYTES:
        if field.name in _HEX_FIELDS:
            return bytes(value).hex()
        return base64.b64encode(value).decode("ascii")
    if t in _INT64 or t in _UINT64:
        return str(value)  # proto3 JSON: 64-bit integers as decimal strings
    if t in _FLOAT:
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
    return value
