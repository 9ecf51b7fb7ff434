# SPDX-License-Identifier: Apache-2.0
"""Validation of decoded OTLP requests, per the bad-input catalogue (reliability.md §3).

What happens to what (spans; log records and data points analogously):

============================================  =============================================
input                                         answer
============================================  =============================================
trace_id not 16 bytes or all zero (B8, B9)    span rejected → ``partial_success``
span_id not 8 bytes or all zero (B8, B9)      span rejected → ``partial_success``
parent_span_id (B10) not 0/8 bytes, zero      span kept, parent dropped (becomes a root), warning
or the span's own span_id
end before start (B11)                        span kept, warning (analysis clamps to 0)
more attributes than the limit (B13)          extras dropped, ``dropped_attributes_count``
                                              incremented, warning
value longer than the limit (B14)             truncated (characters for strings, as the SDK
                                              spec counts; bytes for bytes), warning
array/kvlist nesting over the limit (B15)     span rejected; note upb itself rejects the whole
                                              request past ~47 levels (``INVALID_ARGUMENT``)
invalid UTF-8 (B7)                            never reaches here: upb fails the whole request
============================================  =============================================

Log records: a malformed trace/span ID is cleared (the record stays useful), too-deep records
are rejected.  Data points: an unnamed metric's points and histogram points whose bucket counts
do not match their bounds are rejected; malformed exemplar IDs are cleared.  Data point
attributes are the series identity, so they are neither dropped nor truncated.

Speed: a 512-span batch costs one pass over the spans reading IDs, times and attribute *counts*;
per-attribute work runs only when a limit can be exceeded — value lengths only for spans whose
encoded size exceeds the length limit, depth only when the configured limit is below what upb
already enforces.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, MutableSequence
from typing import Any, NamedTuple

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_agents.receiver._transport_config import UPB_EFFECTIVE_ATTRIBUTE_DEPTH, LimitsConfig

__all__ = ["MAX_MESSAGE_CHARS", "ValidationResult", "count_items", "validate"]

#: ``partial_success.error_message`` is kept short: responses must stay small (spec: 4 MiB cap,
#: trim the message first) and people read it.
MAX_MESSAGE_CHARS = 1024

_ZERO16 = bytes(16)
_ZERO8 = bytes(8)


class ValidationResult(NamedTuple):
    """What :func:`validate` decided.

    Attributes:
        request: the request to store (the same object, edited in place when ``modified``).
        rejected: items dropped (``partial_success.rejected_*``).
        message: English explanation for ``partial_success.error_message`` ("" when clean);
            non-empty with ``rejected == 0`` is a warning.
        modified: whether ``request`` differs from what was received (re-serialize it).
        accepted: items left in ``request``.
        reasons: rejected item counts by reason (metric label values).
    """

    request: Any
    rejected: int
    message: str
    modified: bool
    accepted: int
    reasons: Mapping[str, int]


class _Report:
    """Collects problems: counts by kind, and the first example of each for the message."""

    __slots__ = ("examples", "modified", "rejected", "rejects", "warnings")

    def __init__(self) -> None:
        self.rejects: dict[str, int] = {}
        self.warnings: dict[str, int] = {}
        self.examples: dict[str, str] = {}
        self.rejected = 0
        self.modified = False

    def reject(self, reason: str, where: str) -> None:
        self.rejects[reason] = self.rejects.get(reason, 0) + 1
        self.examples.setdefault(reason, where)
        self.rejected += 1
        self.modified = True

    def warn(self, kind: str, where: str, n: int = 1, *, modified: bool = True) -> None:
        self.warnings[kind] = self.warnings.get(kind, 0) + n
        self.examples.setdefault(kind, where)
        self.modified = self.modified or modified

    def message(self, noun: str) -> str:
        parts = []
        if self.rejected:
            details = "; ".join(
                f"{n} {_REASONS[r]} (first: {self.examples[r]})" for r, n in self.rejects.items()
            )
            noun = noun if self.rejected != 1 else noun[:-1]  # "1 span", "1 log record"
            parts.append(f"rejected {self.rejected} {noun}: {details}")
        if self.warnings:
            details = "; ".join(
                f"{n} {_WARNINGS[w]} (first: {self.examples[w]})" for w, n in self.warnings.items()
            )
            parts.append(f"accepted with changes: {details}")
        msg = ". ".join(parts)
        if len(msg) > MAX_MESSAGE_CHARS:
            msg = msg[: MAX_MESSAGE_CHARS - 3] + "..."
        return msg


_REASONS = {
    "invalid_trace_id": "with a trace_id that is not 16 bytes or is all zero",
    "invalid_span_id": "with a span_id that is not 8 bytes or is all zero",
    "too_deep": "with attribute values nested deeper than the limit",
    "unnamed_metric": "of metrics without a name",
    "bucket_mismatch": "histogram points whose bucket_counts length is not explicit_bounds + 1",
}
_WARNINGS = {
    "bad_parent": (
        "parent_span_id values not 8 non-zero bytes, or the span's own ID, dropped (span kept "
        "as a root)"
    ),
    "end_before_start": "spans ending before they start kept as sent",
    "attrs_dropped": "attributes over the count limit dropped",
    "truncated": "attribute values truncated to the length limit",
    "bad_log_ids": "log record trace/span IDs of the wrong length or all zero cleared",
    "bad_exemplar_ids": "exemplar trace/span IDs of the wrong length or all zero cleared",
}


def count_items(signal: str, request: Any) -> int:
    """Spans / data points / log records in a request (cheap: one pass over containers)."""
    if signal == "traces":
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if signal == "logs":
        return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    n = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is not None:
                    n += len(getattr(m, kind).data_points)
    return n


def validate(
    signal: str, request: Any, limits: LimitsConfig, *, encoded_size: int | None = None
) -> ValidationResult:
    """Validate and repair ``request`` in place.

    Args:
        signal: ``"traces"``, ``"metrics"`` or ``"logs"``.
        request: the decoded ``Export*ServiceRequest``.
        limits: attribute limits.
        encoded_size: size of the request in bytes if known (skips the length check entirely
            when even the whole request is shorter than the length limit).
    """
    if signal == "traces":
        return _validate_traces(request, limits, encoded_size)
    if signal == "logs":
        return _validate_logs(request, limits, encoded_size)
    if signal == "metrics":
        return _validate_metrics(request)
    raise ValueError(f"unknown signal {signal!r}")


def _length_limit(limits: LimitsConfig, encoded_size: int | None) -> int | None:
    limit = limits.max_attribute_value_length
    if limit is None or (encoded_size is not None and encoded_size <= limit):
        return None
    return limit


def _depth_limit(limits: LimitsConfig) -> int | None:
    # upb refuses to parse anything deeper than ~47 levels (and the JSON decoder applies the same
    # message depth), so a limit at or above that can never be exceeded here.
    if limits.max_attribute_depth >= UPB_EFFECTIVE_ATTRIBUTE_DEPTH:
        return None
    return limits.max_attribute_depth


#: The span fields every check reads, fetched in one C call per span.  Reading them as eight
#: attribute lookups from the loop cost ~0.9 us per span (451 us of a 512-span request, a quarter
#: of the receiver's CPU per request); the getter halves it (see _validate_traces()).
_SPAN_FIELDS = operator.attrgetter(
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "attributes",
    "events",
    "links",
)


def _validate_traces(
    request: ExportTraceServiceRequest, limits: LimitsConfig, encoded_size: int | None
) -> ValidationResult:
    rep = _Report()
    max_attrs = limits.max_attributes
    vlen = _length_limit(limits, encoded_size)
    depth = _depth_limit(limits)
    # Per-value checks need every attribute value; without them only the fields above are read.
    deep_checks = depth is not None or vlen is not None
    total = 0
    for ri, rs in enumerate(request.resource_spans):
        for si, ss in enumerate(rs.scope_spans):
            spans = ss.spans
            total += len(spans)
            bad: list[int] = []
            for i, (tid, sid, pid, start, end, attrs, events, links) in enumerate(
                map(_SPAN_FIELDS, spans)
            ):
                if tid == _ZERO16 or len(tid) != 16:
                    rep.reject("invalid_trace_id", _where(ri, si, i, f"trace_id {tid.hex()!r}"))
                    bad.append(i)
                    continue
                if sid == _ZERO8 or len(sid) != 8:
                    rep.reject("invalid_span_id", _where(ri, si, i, f"span_id {sid.hex()!r}"))
                    bad.append(i)
                    continue
                if pid and (len(pid) != 8 or pid in (_ZERO8, sid)):
                    spans[i].parent_span_id = b""
                    rep.warn("bad_parent", _where(ri, si, i, f"parent_span_id {pid.hex()!r}"))
                if end < start:
                    rep.warn("end_before_start", _where(ri, si, i, ""), modified=False)
                if len(attrs) > max_attrs:
                    _drop_attrs(spans[i], max_attrs, rep, _where(ri, si, i, ""))
                if events or links:
                    for ev in events:
                        if len(ev.attributes) > max_attrs:
                            _drop_attrs(ev, max_attrs, rep, _where(ri, si, i, "event"))
                    for ln in links:
                        if len(ln.attributes) > max_attrs:
                            _drop_attrs(ln, max_attrs, rep, _where(ri, si, i, "link"))
                if deep_checks:
                    span = spans[i]
                    if depth is not None and _too_deep(_span_values(span), depth):
                        rep.reject("too_deep", _where(ri, si, i, ""))
                        bad.append(i)
                        continue
                    if vlen is not None and span.ByteSize() > vlen:
                        n = _truncate(_span_values(span), vlen)
                        if n:
                            rep.warn("truncated", _where(ri, si, i, ""), n)
            _delete(spans, bad)
    return ValidationResult(
        request,
        rep.rejected,
        rep.message("spans"),
        rep.modified,
        total - rep.rejected,
        rep.rejects,
    )


def _validate_logs(
    request: ExportLogsServiceRequest, limits: LimitsConfig, encoded_size: int | None
) -> ValidationResult:
    rep = _Report()
    max_attrs = limits.max_attributes
    vlen = _length_limit(limits, encoded_size)
    depth = _depth_limit(limits)
    total = 0
    for ri, rl in enumerate(request.resource_logs):
        for si, sl in enumerate(rl.scope_logs):
            records = sl.log_records
            total += len(records)
            bad: list[int] = []
            for i, rec in enumerate(records):
                tid = rec.trace_id
                sid = rec.span_id
                if (tid and (len(tid) != 16 or tid == _ZERO16)) or (
                    sid and (len(sid) != 8 or sid == _ZERO8)
                ):
                    rec.trace_id = b""
                    rec.span_id = b""
                    rep.warn("bad_log_ids", _where(ri, si, i, "", "log_records"))
                if len(rec.attributes) > max_attrs:
                    _drop_attrs(rec, max_attrs, rep, _where(ri, si, i, "", "log_records"))
                if depth is not None and _too_deep(_log_values(rec), depth):
                    rep.reject("too_deep", _where(ri, si, i, "", "log_records"))
                    bad.append(i)
                    continue
                if vlen is not None and rec.ByteSize() > vlen:
                    n = _truncate(_log_values(rec), vlen)
                    if n:
                        rep.warn("truncated", _where(ri, si, i, "", "log_records"), n)
            _delete(records, bad)
    return ValidationResult(
        request,
        rep.rejected,
        rep.message("log records"),
        rep.modified,
        total - rep.rejected,
        rep.rejects,
    )


def _validate_metrics(request: ExportMetricsServiceRequest) -> ValidationResult:
    rep = _Report()
    total = 0
    for ri, rm in enumerate(request.resource_metrics):
        for si, sm in enumerate(rm.scope_metrics):
            bad_metrics: list[int] = []
            for mi, metric in enumerate(sm.metrics):
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                points = getattr(metric, kind).data_points
                total += len(points)
                where = f"resource_metrics[{ri}].scope_metrics[{si}].metrics[{mi}]"
                if not metric.name:
                    for _ in range(len(points)):
                        rep.reject("unnamed_metric", where)
                    bad_metrics.append(mi)
                    continue
                bad_points: list[int] = []
                for pi, dp in enumerate(points):
                    if (
                        kind == "histogram"
                        and dp.bucket_counts
                        and len(dp.bucket_counts) != len(dp.explicit_bounds) + 1
                    ):
                        rep.reject("bucket_mismatch", f"{where}.data_points[{pi}]")
                        bad_points.append(pi)
                        continue
                    if kind != "summary" and dp.exemplars:
                        for ex in dp.exemplars:
                            if _bad_optional_ids(ex.trace_id, ex.span_id):
                                ex.trace_id = b""
                                ex.span_id = b""
                                rep.warn("bad_exemplar_ids", f"{where}.data_points[{pi}]")
                _delete(points, bad_points)
                if bad_points and not points:
                    bad_metrics.append(mi)
            _delete(sm.metrics, bad_metrics)
    return ValidationResult(
        request,
        rep.rejected,
        rep.message("data points"),
        rep.modified,
        total - rep.rejected,
        rep.rejects,
    )


def _bad_optional_ids(tid: bytes, sid: bytes) -> bool:
    return bool(
        (tid and (len(tid) != 16 or tid == _ZERO16)) or (sid and (len(sid) != 8 or sid == _ZERO8))
    )


def _where(ri: int, si: int, i: int, what: str, items: str = "spans") -> str:
    top, scope = ("resource_spans", "scope_spans")
    if items == "log_records":
        top, scope = ("resource_logs", "scope_logs")
    path = f"{top}[{ri}].{scope}[{si}].{items}[{i}]"
    return f"{path} {what}".rstrip()


def _delete(seq: MutableSequence[Any], indices: list[int]) -> None:
    for i in reversed(indices):
        del seq[i]


def _drop_attrs(owner: Any, max_attrs: int, rep: _Report, where: str) -> None:
    attrs = owner.attributes
    extra = len(attrs) - max_attrs
    # Keep the first ones: SDKs drop the newest attributes once the limit is reached.
    del attrs[max_attrs:]
    owner.dropped_attributes_count += extra
    rep.warn("attrs_dropped", where, extra)


def _span_values(span: Any) -> Iterable[Any]:
    for kv in span.attributes:
        yield kv.value
    for ev in span.events:
        for kv in ev.attributes:
            yield kv.value
    for ln in span.links:
        for kv in ln.attributes:
            yield kv.value


def _log_values(rec: Any) -> Iterable[Any]:
    if rec.HasField("body"):
        yield rec.body
    for kv in rec.attributes:
        yield kv.value


def _too_deep(values: Iterable[Any], limit: int) -> bool:
    """Whether any array/kvlist value nests deeper than ``limit`` containers (iterative)."""
    for root in values:
        kind = root.WhichOneof("value")
        if kind != "array_value" and kind != "kvlist_value":
            continue
        stack = [(root, 0)]
        while stack:
            value, d = stack.pop()
            kind = value.WhichOneof("value")
            if kind == "array_value":
                children: Iterable[Any] = value.array_value.values
            elif kind == "kvlist_value":
                children = (kv.value for kv in value.kvlist_value.values)
            else:
                continue
            if d + 1 > limit:
                return True
            stack.extend((c, d + 1) for c in children)
    return False


def _truncate(values: Iterable[Any], limit: int) -> int:
    """Truncate string/bytes values longer than ``limit``; returns how many were cut."""
    cut = 0
    stack = list(values)
    while stack:
        value = stack.pop()
        kind = value.WhichOneof("value")
        if kind == "string_value":
            s = value.string_value
            if len(s) > limit:
                # Python strings index code points, so this never splits a UTF-8 sequence.
                value.string_value = s[:limit]
                cut += 1
        elif kind == "bytes_value":
            b = value.bytes_value
            if len(b) > limit:
                value.bytes_value = b[:limit]
                cut += 1
        elif kind == "array_value":
            stack.extend(value.array_value.values)
        elif kind == "kvlist_value":
            stack.extend(kv.value for kv in value.kvlist_value.values)
    return cut
