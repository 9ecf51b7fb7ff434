# SPDX-License-Identifier: Apache-2.0
"""Redaction of secrets and GenAI content in OTLP requests, applied before forwarding.

Two independent switches per destination:

* ``secrets`` (on by default): attribute values whose **key** matches the deny set
  (``authorization``, ``api[-_]key``, ``secret``, ``password``, ``cookie``/``set-cookie``,
  ``credential``, ``private[-_]key``, and keys *ending* in ``token`` — so ``access_token`` is masked
  but ``gen_ai.usage.input_tokens`` is not) are replaced by ``"[REDACTED]"``; substrings of any
  string value that look like credentials (``sk-...`` provider keys, ``Bearer <token>``, AWS
  ``AKIA...`` key IDs, GitHub ``ghp_...`` tokens) are masked in place.
* ``content`` (off by default): the GenAI content attributes
  (:data:`otel_agents.semconv.CONTENT_ATTRIBUTES`: input/output messages, system instructions,
  tool arguments/results, decision reasoning) are removed.

Forwarding sends the spooled bytes unchanged whenever possible, so a cheap byte-level pre-check
runs first: it matches a superset of what the attribute-level rules match (a key ending in
``token`` is followed in the wire format by the ``KeyValue.value`` tag byte ``0x12``), and only
when it hits is the request parsed, redacted and re-encoded.  Custom patterns disable the
pre-check (every request is parsed).  What was redacted is reported as a count, never as names.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otel_agents.semconv import CONTENT_ATTRIBUTES

__all__ = ["MASK", "RedactionConfig", "Redactor"]

_log = logging.getLogger(__name__)

MASK = "[REDACTED]"

_KEY_WORDS = r"authorization|api[-_]?key|secret|passw(?:or)?d|cookie|credential|private[-_]?key"
_VALUE_PATTERNS = (
    r"\bsk-[A-Za-z0-9_-]{16,}",  # OpenAI / Anthropic style provider keys
    r"\b[Bb][Ee][Aa][Rr][Ee][Rr]\s+[A-Za-z0-9._~+/-]{8,}=*",  # bearer credentials
    r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key IDs
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
)
_DEFAULT_KEY_RE = re.compile(rf"(?:{_KEY_WORDS})|token$", re.IGNORECASE | re.ASCII)
_DEFAULT_VALUE_RE = re.compile("|".join(_VALUE_PATTERNS))
# Superset of the two above on serialized bytes (see module docstring).
# Byte-level pre-check: literals, looked up in the lower-cased payload, such that every match of
# the rules above contains one of them (a superset).  Plain substring search is ~25x faster than
# a case-insensitive regex alternation here (measured: 0.5 ms vs 11.7 ms on an 80 KB request).
# "key" stands for api[-_]?key and private[-_]?key; a key ending in "token" is followed in the
# wire format by the KeyValue.value tag byte 0x12; no \b: a string's neighbours in the wire
# format are its length byte and the next tag, which can be "word" bytes.
_SECRET_LITERALS = (
    b"authoriz", b"key", b"secret", b"passw", b"cookie", b"credential", b"token\x12",
    b"sk-", b"bearer", b"akia",
)  # fmt: skip
_GITHUB_PREFIX = re.compile(rb"gh[pousr]_")
_CONTENT_LITERALS = tuple(
    sorted({b"messages" if k.endswith(".messages") else k.encode() for k in CONTENT_ATTRIBUTES})
)


def _secrets_might_match_stdlib(payload: bytes) -> bool:
    low = payload.lower()
    return any(lit in low for lit in _SECRET_LITERALS) or bool(_GITHUB_PREFIX.search(low))


def _re2_prefilter() -> Any:
    """The same literal set as one RE2 automaton (one linear pass, no lower-cased copy).

    Measured on a 512-span agent request (198 KB): 0.24 ms against 1.04 ms for the eleven
    stdlib substring searches above, which ran on every spooled *and* every forwarded request.
    Latin-1 mode: the payload is binary protobuf, and ``(?i)`` then folds ASCII only, exactly
    like ``bytes.lower()``.  ``None`` when google-re2 is not installed (stdlib path).
    """
    try:
        import re2  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.case_sensitive = False
    options.never_capture = True
    literals = [re.escape(lit.decode("latin-1")).encode("latin-1") for lit in _SECRET_LITERALS]
    literals.append(_GITHUB_PREFIX.pattern)
    return re2.compile(b"|".join(literals), options)


_SECRETS_RE2 = _re2_prefilter()


def _hex_pattern(literal: bytes) -> bytes:
    """``literal`` as a pattern both RE2 and Hyperscan read the same way (``\\xHH`` escapes)."""
    return b"".join(bytes([c]) if chr(c).isalnum() else f"\\x{c:02x}".encode() for c in literal)


def _hyperscan_prefilter() -> Callable[[bytes], bool] | None:
    """The same literal set for Hyperscan (x86-64): ~10x faster than RE2 on this input.

    Measured on the 512-span request above (198 KB): 22 µs against RE2's 234 µs, and this
    check runs on every request the receiver stores (``storage.redact_secrets``).  Hyperscan's
    literal matcher (FDR) scans many bytes per step with SIMD where RE2's DFA takes one byte per
    step.  ``HS_FLAG_CASELESS`` folds ASCII only (block mode, no UTF-8 flag), like
    ``bytes.lower()``; the scan stops at the first match.  ``None`` when the package is missing
    (other architectures) or the database does not compile: RE2 then does the check.
    """
    try:
        import hyperscan  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    patterns = [_hex_pattern(lit) for lit in _SECRET_LITERALS]
    patterns.append(_GITHUB_PREFIX.pattern)
    flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH
    try:
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(
            expressions=patterns,
            ids=list(range(len(patterns))),
            elements=len(patterns),
            flags=[flags] * len(patterns),
        )
        prototype = hyperscan.Scratch(db)
    except Exception as exc:  # a broken install must not break redaction: RE2 takes over
        _log.warning("redaction: Hyperscan unavailable (%s); using RE2", exc)
        return None
    # A scratch space serves one scan at a time; the receiver scans on many threads.
    local = threading.local()
    terminated = hyperscan.ScanTerminated

    def stop(*_: Any) -> bool:
        return True  # first match decides: stop scanning

    def might_match(payload: bytes) -> bool:
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = prototype.clone()
        try:
            db.scan(payload, match_event_handler=stop, scratch=scratch)
        except terminated:
            return True
        return False

    return might_match


_SECRETS_HS = _hyperscan_prefilter()


def _secrets_might_match(payload: bytes) -> bool:
    if _SECRETS_HS is not None:
        return _SECRETS_HS(payload)
    if _SECRETS_RE2 is not None:
        return _SECRETS_RE2.search(payload) is not None
    return _secrets_might_match_stdlib(payload)


def _content_might_match(payload: bytes) -> bool:
    return any(lit in payload for lit in _CONTENT_LITERALS)


_REQUEST_TYPES: dict[str, Any] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}


@dataclasses.dataclass(frozen=True)
class RedactionConfig:
    """``exporters.<id>.redaction``.

    Attributes:
        secrets: mask the default deny set (keys and credential-looking values).
        content: remove GenAI content attributes (prompts, completions, tool I/O, reasoning).
        blocked_key_patterns: extra regexes; attributes whose key matches are masked.
        blocked_values: extra regexes; matching substrings of string values are masked.
    """

    secrets: bool = True
    content: bool = False
    blocked_key_patterns: tuple[str, ...] = ()
    blocked_values: tuple[str, ...] = ()

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        for key, patterns in (
            ("blocked_key_patterns", self.blocked_key_patterns),
            ("blocked_values", self.blocked_values),
        ):
            for i, p in enumerate(patterns):
                try:
                    re.compile(p)
                except re.error as exc:
                    return [f"{key}[{i}]: invalid regular expression: {exc}"]
        return []


class Redactor:
    """Applies a :class:`RedactionConfig` to serialized OTLP requests."""

    def __init__(self, config: RedactionConfig) -> None:
        self.config = config
        keys = list(config.blocked_key_patterns)
        values = list(config.blocked_values)
        if config.secrets:
            keys.append(_DEFAULT_KEY_RE.pattern)
            values.append(_DEFAULT_VALUE_RE.pattern)
        self._key_re = (
            # ASCII case folding only: the byte pre-check lower-cases ASCII, and "ſecret" (long s)
            # must not be a secret key for one and not the other.
            re.compile("|".join(f"(?:{k})" for k in keys), re.IGNORECASE | re.ASCII)
            if keys
            else None
        )
        self._value_re = re.compile("|".join(f"(?:{v})" for v in values)) if values else None
        self._custom = bool(config.blocked_key_patterns or config.blocked_values)
        self.enabled = bool(keys or values or config.content)

    def _might_match(self, payload: bytes) -> bool:
        if self._custom:
            return True
        if self.config.secrets and _secrets_might_match(payload):
            return True
        return self.config.content and _content_might_match(payload)

    def apply(self, signal: str, payload: bytes) -> tuple[bytes, int]:
        """Return ``(payload, values redacted)``; the same bytes object when nothing changed.

        A payload that does not parse is returned unchanged (it was validated on the way in, so
        this does not happen; the forwarder must not be the place that loses data).
        """
        if not self.enabled or not self._might_match(payload):
            return payload, 0
        request = _REQUEST_TYPES[signal]()
        try:
            request.ParseFromString(payload)
        except DecodeError:
            return payload, 0
        count = 0
        for attrs in _attribute_lists(signal, request):
            count += self._redact(attrs)
        if signal == "logs" and self.config.content:
            count += self._clear_genai_bodies(request)
        if not count:
            return payload, 0
        return request.SerializeToString(), count

    def _redact(self, attrs: Any) -> int:
        count = 0
        drop: list[int] = []
        for i, kv in enumerate(attrs):
            if self.config.content and kv.key in CONTENT_ATTRIBUTES:
                drop.append(i)
                continue
            if self._key_re is not None and self._key_re.search(kv.key):
                if not (
                    kv.value.WhichOneof("value") == "string_value" and kv.value.string_value == MASK
                ):
                    kv.value.Clear()
                    kv.value.string_value = MASK
                    count += 1
                continue
            if self._value_re is not None:
                count += self._mask_value(kv.value)
        for i in reversed(drop):
            del attrs[i]
        return count + len(drop)

    def _mask_value(self, value: AnyValue) -> int:
        assert self._value_re is not None
        kind = value.WhichOneof("value")
        if kind == "string_value":
            new, n = self._value_re.subn(MASK, value.string_value)
            if n:
                value.string_value = new
                return 1
            return 0
        if kind == "array_value":
            return sum(self._mask_value(v) for v in value.array_value.values)
        if kind == "kvlist_value":
            return self._redact(value.kvlist_value.values)
        return 0

    @staticmethod
    def _clear_genai_bodies(request: ExportLogsServiceRequest) -> int:
        count = 0
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    if record.event_name.startswith("gen_ai.") and record.HasField("body"):
                        record.ClearField("body")
                        count += 1
        return count


def _attribute_lists(signal: str, request: Any) -> Iterable[Any]:
    """Every repeated ``KeyValue`` field of a request (resource, scope, item, event, link)."""
    if signal == "traces":
        for rs in request.resource_spans:
            yield rs.resource.attributes
            for ss in rs.scope_spans:
                yield ss.scope.attributes
                for span in ss.spans:
                    yield span.attributes
                    for event in span.events:
                        yield event.attributes
                    for link in span.links:
                        yield link.attributes
    elif signal == "logs":
        for rl in request.resource_logs:
            yield rl.resource.attributes
            for sl in rl.scope_logs:
                yield sl.scope.attributes
                for record in sl.log_records:
                    yield record.attributes
    else:
        for rm in request.resource_metrics:
            yield rm.resource.attributes
            for sm in rm.scope_metrics:
                yield sm.scope.attributes
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is None:
                        continue
                    for point in getattr(metric, kind).data_points:
                        yield point.attributes
                        for exemplar in getattr(point, "exemplars", ()):
                            yield exemplar.filtered_attributes
