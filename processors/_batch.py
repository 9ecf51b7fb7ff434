# SPDX-License-Identifier: Apache-2.0
"""``SpanBatch``: an OTLP trace request decoded once into normalized, priced columns.

Every analysis stage works on these columns (numpy arrays of equal length ``n``) instead of
walking protobuf messages; the only per-span Python loop in the analysis path is the decode
here, which touches each attribute once and keeps only the keys analysis needs.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from otel_agents import _normalize as _norm
from otel_agents import semconv as sc
from otel_agents._spans import tool_args_hash

from ._sampling import SpanSampler, adjusted_count

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    from otel_agents._cost import PriceBook

__all__ = [
    "SPAN_KIND_CLIENT", "SPAN_KIND_SERVER", "SpanBatch", "agent_pending",
    "build_sampled_span_batch", "build_span_batch", "build_span_batch_from_payload",
    "resolve_agents", "sample_payload",
]  # fmt: skip

_log = logging.getLogger(__name__)

# OTLP Span.SpanKind / Status.StatusCode values (opentelemetry/proto/trace/v1/trace.proto).
SPAN_KIND_INTERNAL = 1
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_CODE_ERROR = 2

ObjArray = npt.NDArray[np.object_]
I64Array = npt.NDArray[np.int64]
F64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Columns that hold Python objects (str / bytes), numeric columns, in declaration order.
_OBJ_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "service_name", "operation",
    "agent_name", "agent_id", "tool_name", "tool_args_hash", "request_model",
    "response_model", "provider", "conversation_id", "error_type", "a2a_method",
    "a2a_task_id", "a2a_peer", "main_agent",
)  # fmt: skip
_I64_COLUMNS = (
    "kind", "start_ns", "end_ns", "status_code", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_creation_tokens", "reasoning_tokens",
)  # fmt: skip
_F64_COLUMNS = ("cost", "weight")
_BOOL_COLUMNS = ("unpriced",)
COLUMNS = _OBJ_COLUMNS + _I64_COLUMNS + _F64_COLUMNS + _BOOL_COLUMNS
_I64_MAX = 2**63 - 1
_NO_OBJECTS: ObjArray = np.empty(0, dtype=object)
_NO_FLOATS: F64Array = np.empty(0, dtype=np.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class SpanBatch:
    """Spans as columns of equal length ``n`` (see docs/architecture.md "SpanBatch").

    IDs are ``bytes`` (16-byte trace IDs, 8-byte span IDs, ``b""`` for roots); strings absent
    on a span are ``""``; token counts absent are 0; ``cost`` is USD on inference spans only
    (sender's ``gen_ai.usage.cost.amount`` or priced here from tokens), 0 elsewhere;
    ``unpriced`` marks inference spans with tokens that nobody could price. ``received_at``
    is the receiver's clock (unix seconds) when the request arrived. ``main_agent`` is the
    Resource's ``gen_ai.main_agent.name`` (a zero-code process declares its agent there).
    ``agent_name`` is already inherited from ancestors *within the batch* (see
    :func:`build_span_batch`); spans still without one and with a parent are resolved by
    assembly.
    """

    trace_id: ObjArray
    span_id: ObjArray
    parent_span_id: ObjArray
    name: ObjArray
    service_name: ObjArray
    operation: ObjArray
    agent_name: ObjArray
    agent_id: ObjArray
    tool_name: ObjArray
    tool_args_hash: ObjArray
    request_model: ObjArray
    response_model: ObjArray
    provider: ObjArray
    conversation_id: ObjArray
    error_type: ObjArray
    a2a_method: ObjArray
    a2a_task_id: ObjArray
    a2a_peer: ObjArray
    kind: I64Array
    start_ns: I64Array
    end_ns: I64Array
    status_code: I64Array
    input_tokens: I64Array
    output_tokens: I64Array
    cache_read_tokens: I64Array
    cache_creation_tokens: I64Array
    reasoning_tokens: I64Array
    cost: F64Array
    unpriced: BoolArray
    received_at: float = 0.0
    main_agent: ObjArray = dataclasses.field(default_factory=lambda: _NO_OBJECTS)
    weight: F64Array = dataclasses.field(default_factory=lambda: _NO_FLOATS)
    analysed_fraction: float = 1.0

    def __post_init__(self) -> None:
        # Batches built without the column (older callers, hand-made test batches) get "":
        # the Resource declared no main agent.
        n = self.kind.shape[0]
        if self.main_agent.shape[0] != n:
            object.__setattr__(self, "main_agent", np.full(n, "", dtype=object))
        # ... and weight 1: every span analysed.
        if self.weight.shape[0] != n:
            object.__setattr__(self, "weight", np.ones(n, dtype=np.float64))

    @property
    def sampled(self) -> bool:
        """Whether some span stands for more than itself (analysis sampling was on)."""
        return bool(self.weight.shape[0]) and bool((self.weight != 1.0).any())

    @property
    def n(self) -> int:
        """Number of spans."""
        return int(self.kind.shape[0])

    def __len__(self) -> int:
        return self.n

    @property
    def duration_s(self) -> F64Array:
        """Span durations in seconds, clamped at 0 (end before start is kept, not trusted)."""
        d: F64Array = np.maximum(self.end_ns - self.start_ns, 0).astype(np.float64) / 1e9
        return d

    @property
    def is_error(self) -> BoolArray:
        """Status ERROR or an ``error.type`` set."""
        err: BoolArray = (self.status_code == STATUS_CODE_ERROR) | (self.error_type != "")
        return err

    @property
    def is_inference(self) -> BoolArray:
        """Model inference spans (the only ones that carry cost)."""
        return np.isin(self.operation, list(sc.INFERENCE_OPERATIONS))

    def take(self, index: npt.ArrayLike) -> SpanBatch:
        """The rows at ``index`` (integer array or boolean mask) as a new batch."""
        idx = np.asarray(index)
        cols = {c: getattr(self, c)[idx] for c in COLUMNS}
        return SpanBatch(
            **cols, received_at=self.received_at, analysed_fraction=self.analysed_fraction
        )

    def with_columns(self, **columns: Any) -> SpanBatch:
        """A copy with some columns replaced (same length)."""
        return dataclasses.replace(self, **columns)

    @staticmethod
    def concat(batches: Sequence[SpanBatch]) -> SpanBatch:
        """All rows of ``batches`` in order; ``received_at`` is the latest of them."""
        if not batches:
            return SpanBatch.empty()
        if len(batches) == 1:
            return batches[0]
        cols = {c: np.concatenate([getattr(b, c) for b in batches]) for c in COLUMNS}
        return SpanBatch(
            **cols,
            received_at=max(b.received_at for b in batches),
            analysed_fraction=min(b.analysed_fraction for b in batches),
        )

    @staticmethod
    def empty(received_at: float = 0.0) -> SpanBatch:
        """A batch with no spans."""
        return _from_lists({c: [] for c in COLUMNS}, received_at)


def _from_lists(
    cols: Mapping[str, list[Any]], received_at: float, analysed_fraction: float = 1.0
) -> SpanBatch:
    arrays: dict[str, Any] = {}
    for c in _OBJ_COLUMNS:
        a = np.empty(len(cols[c]), dtype=object)
        a[:] = cols[c]
        arrays[c] = a
    for c in _I64_COLUMNS:
        try:
            arrays[c] = np.asarray(cols[c], dtype=np.int64)
        except OverflowError:  # fixed64 timestamps ≥ 2^63 (B11/B12 garbage): clamp, keep span
            arrays[c] = np.asarray([min(int(v), _I64_MAX) for v in cols[c]], dtype=np.int64)
    for c in _F64_COLUMNS:
        arrays[c] = np.asarray(cols[c], dtype=np.float64)
    for c in _BOOL_COLUMNS:
        arrays[c] = np.asarray(cols[c], dtype=np.bool_)
    return SpanBatch(**arrays, received_at=received_at, analysed_fraction=analysed_fraction)


# ------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------

# Canonical keys analysis reads; everything else on a span is skipped without decoding.
_STR_KEYS = {
    sc.GEN_AI_OPERATION_NAME: "operation",
    sc.GEN_AI_AGENT_NAME: "agent_name",
    sc.GEN_AI_AGENT_ID: "agent_id",
    sc.GEN_AI_TOOL_NAME: "tool_name",
    sc.AGENT_TOOL_ARGS_HASH: "tool_args_hash",
    sc.GEN_AI_REQUEST_MODEL: "request_model",
    sc.GEN_AI_RESPONSE_MODEL: "response_model",
    sc.GEN_AI_PROVIDER_NAME: "provider",
    sc.GEN_AI_CONVERSATION_ID: "conversation_id",
    sc.ERROR_TYPE: "error_type",
    sc.A2A_METHOD_NAME: "a2a_method",
    sc.A2A_TASK_ID: "a2a_task_id",
    sc.AGENT_A2A_PEER_AGENT: "a2a_peer",
}
_INT_KEYS = {
    sc.GEN_AI_USAGE_INPUT_TOKENS: "input_tokens",
    sc.GEN_AI_USAGE_OUTPUT_TOKENS: "output_tokens",
    sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: "cache_read_tokens",
    sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: "cache_creation_tokens",
    sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: "reasoning_tokens",
}
_OTHER_KEYS = {
    sc.GEN_AI_USAGE_COST_AMOUNT,
    sc.GEN_AI_USAGE_COST_CURRENCY,
    sc.AGENT_COST_UNPRICED,
    sc.GEN_AI_TOOL_CALL_ARGUMENTS,
    sc.GEN_AI_SYSTEM,
}
_CANONICAL = frozenset(_STR_KEYS) | frozenset(_INT_KEYS) | frozenset(_OTHER_KEYS)

# Keys that only trigger dialect inference (span kinds, entity names, totals) are read too.
_DIALECT_KEYS = frozenset(_norm.ALIASES) | {
    _norm.OI_SPAN_KIND,
    _norm.TL_SPAN_KIND,
    _norm.TL_ENTITY_NAME,
    _norm.TL_REQUEST_TYPE,
    _norm.OI_TOKEN_TOTAL,
}
_WANTED = _CANONICAL | _DIALECT_KEYS


def _any_value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which == "array_value":
        return tuple(_any_value(x) for x in v.array_value.values)
    if which == "bytes_value":
        return v.bytes_value
    return None  # kvlist / empty: nothing analysis reads


def _as_int(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return min(max(v, 0), _I64_MAX)
    if isinstance(v, float) and v == v:
        return min(max(int(v), 0), _I64_MAX) if v != float("inf") else 0
    if isinstance(v, str):
        try:
            return max(int(float(v)), 0)
        except ValueError:
            return 0
    return 0


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        f = float(v)
        return f if f == f and f >= 0 else None
    if isinstance(v, str):
        try:
            return _as_float(float(v))
        except ValueError:
            return None
    return None


# Label-like columns repeat a few values across many spans: interning makes every span share
# one string object (less memory while traces wait for decision_wait, cached hashes for the
# dict-based grouping).  Interned strings are freed with their last reference.
_LOW_CARDINALITY = frozenset(
    {"operation", "agent_name", "tool_name", "request_model", "response_model", "provider",
     "error_type", "a2a_method", "a2a_peer"}
)  # fmt: skip


def _as_label(v: Any) -> str:
    return sys.intern(_as_str(v))


def _as_str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, tuple):
        return ",".join(str(x) for x in v)
    return str(v)


def build_span_batch(
    request: ExportTraceServiceRequest,
    *,
    pricebook: PriceBook | None,
    received_at: float,
    threshold: int = 0,
) -> SpanBatch:
    """Decode an OTLP trace request once into a normalized, priced :class:`SpanBatch`.

    Args:
        request: the decoded (and validated) OTLP request.
        pricebook: prices inference spans that have tokens but no
            ``gen_ai.usage.cost.amount``; ``None`` leaves them unpriced.
        received_at: receiver clock (unix seconds) when the request arrived.
        threshold: analysis sampling rejection threshold (56-bit, ``0`` = every span): spans
            of traces whose randomness is below it are skipped before their attributes are
            read (:mod:`._sampling`); the others get their adjusted count in ``weight``.

    Returns:
        The batch; spans keep request order.
    """
    groups: list[tuple[Any, Iterable[Any]]]
    if threshold > 0:
        # Only trace_id and trace_state are read from a skipped span.
        groups, weights = _sample(request, threshold)
        fraction = 1.0 / adjusted_count(threshold)
        return _columns(groups, len(weights), weights, pricebook, received_at, fraction)
    n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    groups = [
        (rs.resource, itertools.chain.from_iterable(ss.spans for ss in rs.scope_spans))
        for rs in request.resource_spans
    ]
    return _columns(groups, n, None, pricebook, received_at, 1.0)


def _columns(
    groups: Sequence[tuple[Any, Iterable[Any]]],
    n: int,
    weights: list[float] | None,
    pricebook: PriceBook | None,
    received_at: float,
    fraction: float,
) -> SpanBatch:
    """The batch of the ``n`` spans of ``groups`` (``(resource, spans)`` pairs); ``weights``
    are their adjusted counts at analysed ``fraction`` (``None``: every span analysed)."""
    if weights is not None and n == 0:  # the usual case at small fractions: no columns to build
        return dataclasses.replace(_EMPTY, received_at=received_at, analysed_fraction=fraction)
    # Columns preallocated with their "absent" value; only attributes present are written.
    cols: dict[str, list[Any]] = {c: [""] * n for c in _OBJ_COLUMNS}
    cols.update({c: [0] * n for c in _I64_COLUMNS})
    cols["cost"] = [0.0] * n
    cols["unpriced"] = [False] * n
    trace_id, span_id, parent_id = cols["trace_id"], cols["span_id"], cols["parent_span_id"]
    names, services, kinds = cols["name"], cols["service_name"], cols["kind"]
    starts, ends, status = cols["start_ns"], cols["end_ns"], cols["status_code"]
    main_agents, ops = cols["main_agent"], cols["operation"]
    # One dict lookup per attribute routes it: to a column (with its conversion) or, for the
    # few keys that need the whole span (cost, arguments, dialect keys), to ``extra``.
    route: dict[str, tuple[list[Any], int]] = {k: (_NO_COLUMN, _EXTRA) for k in _WANTED}
    route.update(
        {k: (cols[c], _LABEL if c in _LOW_CARDINALITY else _STR) for k, c in _STR_KEYS.items()}
    )
    route.update({k: (cols[c], _INT) for k, c in _INT_KEYS.items()})
    route_get = route.get
    triggers = _norm.DIALECT_KEYS
    inference_ops = sc.INFERENCE_OPERATIONS
    main_agent_key = sc.GEN_AI_MAIN_AGENT_NAME
    intern = sys.intern
    i = 0
    for resource, spans in groups:
        service = main_agent = ""
        for kv in resource.attributes:  # once per resource, not per span
            if kv.key == "service.name":
                service = _as_label(_any_value(kv.value))
            elif kv.key == main_agent_key:
                main_agent = _as_label(_any_value(kv.value))
        for span in spans:
            trace_id[i] = span.trace_id
            span_id[i] = span.span_id
            parent_id[i] = span.parent_span_id
            names[i] = intern(span.name)
            services[i] = service
            main_agents[i] = main_agent
            kinds[i] = span.kind
            starts[i] = span.start_time_unix_nano
            ends[i] = span.end_time_unix_nano
            status[i] = span.status.code
            extra: dict[str, Any] | None = None
            for kv in span.attributes:
                r = route_get(kv.key)
                if r is None:
                    continue  # most keys: one lookup, value never touched
                v = kv.value
                col, how = r
                # Read the expected member first: a string key holding a non-empty string
                # (nearly all of them) costs no WhichOneof call; anything else (empty,
                # other types) takes the general conversion.  Duplicate keys: last wins.
                if how == _LABEL:
                    val: Any = v.string_value
                    col[i] = intern(val) if val else _as_label(_any_value(v))
                elif how == _INT:
                    val = v.int_value
                    col[i] = val if val > 0 else _as_int(_any_value(v))
                elif how == _STR:
                    val = v.string_value
                    col[i] = val if val else _as_str(_any_value(v))
                else:
                    if extra is None:
                        extra = {}
                    extra[kv.key] = _any_value(v)
            if extra is not None and not triggers.isdisjoint(extra):
                # Another dialect (OpenInference, Traceloop...): normalize the whole span
                # (rare, so this path re-reads it) and write its canonical values over.
                extra = _normalized(span, route, i)
            if extra is not None or ops[i] in inference_ops:
                # argument hash, legacy provider, cost: only these spans can need them
                _extras(extra or _NO_ATTRS, cols, i, pricebook, inference_ops)
            i += 1
    if weights is not None:
        cols["weight"] = weights
        batch = _from_lists(cols, received_at, fraction)
    else:
        cols["weight"] = [1.0] * n
        batch = _from_lists(cols, received_at)
    _a2a_client_roles(batch)
    resolve_agents(batch)
    return batch


def _sample(
    request: ExportTraceServiceRequest, threshold: int
) -> tuple[list[tuple[Any, Iterable[Any]]], list[float]]:
    """Per ResourceSpans the spans analysis keeps at ``threshold``, and their weights."""
    sampler = SpanSampler(threshold)
    groups: list[tuple[Any, Iterable[Any]]] = []
    weights: list[float] = []
    last_tid: bytes | None = None
    w = 0.0
    for rs in request.resource_spans:
        kept = []
        for ss in rs.scope_spans:
            for span in ss.spans:
                tid = span.trace_id
                if tid != last_tid:
                    # Spans of a trace come together: one decision per run of a trace ID, so
                    # a trace is never split even if its spans disagree on tracestate.
                    last_tid = tid
                    w = sampler.weight(tid, span.trace_state)
                if w:
                    kept.append(span)
                    weights.append(w)
        if kept:
            groups.append((rs.resource, kept))
    return groups, weights


_EMPTY = SpanBatch.empty()


# ------------------------------------------------------------------------------------------
# Sampling before the full parse
# ------------------------------------------------------------------------------------------

# Two reduced views of ExportTraceServiceRequest, wire-compatible with the real one (same field
# numbers and wire types).  ``_ids``: a Span declares only trace_id and trace_state, so upb
# parses the sampling inputs with protobuf's own semantics (any field order, last duplicate
# wins) and skips the rest of each span in C without building Python objects.  ``_raw``: the
# resource, scope and span sub-messages as the bytes they were sent as (a message field and a
# bytes field share the LEN wire type), so the spans of sampled traces can be copied into a
# smaller request verbatim.  Resource and scope are *repeated* bytes: a sub-message sent twice
# is merged by a full parse, and copying every occurrence keeps that merge.
_F = descriptor_pb2.FieldDescriptorProto
_REDUCED = (
    ("IdsRequest", (("resource_spans", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "IdsResource"),)),
    ("IdsResource", (("scope_spans", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "IdsScope"),)),
    ("IdsScope", (("spans", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "IdsSpan"),)),
    ("IdsSpan", (("trace_id", 1, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, ""),
                 ("trace_state", 3, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""))),
    ("RawRequest", (("resource_spans", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "RawResource"),)),
    ("RawResource", (("resource", 1, _F.TYPE_BYTES, _F.LABEL_REPEATED, ""),
                     ("scope_spans", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "RawScope"))),
    ("RawScope", (("scope", 1, _F.TYPE_BYTES, _F.LABEL_REPEATED, ""),
                  ("spans", 2, _F.TYPE_BYTES, _F.LABEL_REPEATED, ""))),
)  # fmt: skip
_PACKAGE = "otel_agents.processors.reduced_otlp"


def _reduced_classes() -> tuple[type[Message], type[Message]]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="otel_agents/processors/reduced_otlp.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in _REDUCED:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if tname:
                f.type_name = f".{_PACKAGE}.{tname}"
    pool = descriptor_pool.DescriptorPool()  # private: never clashes with the real protos
    pool.Add(fdp)
    ids = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.IdsRequest"))
    raw = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.RawRequest"))
    return ids, raw


_IdsRequest, _RawRequest = _reduced_classes()


def sample_payload(payload: bytes, threshold: int) -> tuple[bytes, list[float]]:
    """The spans of a serialized ``ExportTraceServiceRequest`` that analysis keeps at
    ``threshold``, as a smaller serialized request, and their weights (in request order).

    Decides exactly as :func:`build_span_batch` does (one decision per run of a trace ID, by
    the rule of :mod:`._sampling`) from a parse that declares only ``trace_id`` and
    ``trace_state``; the kept spans, and the resources and scopes they belong to, are copied
    byte for byte.  ``(b"", [])`` when no span is kept.

    Raises:
        google.protobuf.message.DecodeError: the payload is not a valid request.
    """
    ids = _IdsRequest.FromString(payload)
    fast = _decide_columnar(ids, threshold)
    if fast is not None:
        return _copy_kept(payload, fast[0]), [adjusted_count(threshold)] * fast[1]
    # Some span carries a tracestate (or an odd trace ID): one decision per run, in Python.
    sampler = SpanSampler(threshold)
    weights: list[float] = []
    kept: list[tuple[int, int, list[int]]] = []  # (resource index, scope index, span indices)
    last_tid: bytes | None = None
    w = 0.0
    for i, rs in enumerate(ids.resource_spans):  # type: ignore[attr-defined]
        for j, ss in enumerate(rs.scope_spans):
            idx: list[int] | None = None
            for k, span in enumerate(ss.spans):
                tid = span.trace_id
                if tid != last_tid:
                    # The run rule of _sample: a trace is never split.
                    last_tid = tid
                    w = sampler.weight(tid, span.trace_state)
                if w:
                    if idx is None:
                        idx = []
                        kept.append((i, j, idx))
                    idx.append(k)
                    weights.append(w)
    return _copy_kept(payload, kept), weights


# A span of the reduced request re-serialized without its unknown fields, when it carries
# nothing but a 16-byte trace ID: tag+length of the span, tag+length of trace_id, the ID.
_ID_ONLY_SPAN = np.frombuffer(b"\x12\x12\x0a\x10", dtype=np.uint8)
_ID_ONLY_BYTES = 20


def _decide_columnar(
    ids: Any, threshold: int
) -> tuple[list[tuple[int, int, list[int]]], int] | None:
    """The kept spans without a Python step per span, when no span carries a ``trace_state``
    (the usual request): each scope's spans, stripped to their trace IDs, re-serialize as
    fixed 20-byte records, and the decision is the trace ID's randomness against the
    threshold for every span of a trace alike.  ``None`` when some scope does not have that
    shape (a tracestate, a trace ID of another length): the caller decides span by span."""
    ids.DiscardUnknownFields()
    kept: list[tuple[int, int, list[int]]] = []
    n = 0
    for i, rs in enumerate(ids.resource_spans):
        for j, ss in enumerate(rs.scope_spans):
            buf = ss.SerializeToString()
            if not buf:
                continue
            if len(buf) % _ID_ONLY_BYTES:
                return None
            rec = np.frombuffer(buf, dtype=np.uint8).reshape(-1, _ID_ONLY_BYTES)
            # Serialization is canonical (known fields only, in field order, last duplicate
            # won at parse), so a record that starts with these four bytes is exactly a span
            # whose only field is a 16-byte trace ID; a trace_state or another ID length
            # changes a span's length byte or its first field tag.
            if not (rec[:, :4] == _ID_ONLY_SPAN).all():
                return None
            # The trace ID's last 7 bytes, big-endian, as integers (the 56-bit randomness).
            r = np.zeros((rec.shape[0], 8), dtype=np.uint8)
            r[:, 1:] = rec[:, 13:]
            idx = np.nonzero(r.view(">u8").ravel() >= threshold)[0]
            if idx.shape[0]:
                kept.append((i, j, idx.tolist()))
                n += idx.shape[0]
    return kept, n


def _copy_kept(payload: bytes, kept: Sequence[tuple[int, int, Sequence[int]]]) -> bytes:
    """The request made of the ``kept`` spans (resource index, scope index, span indices) of
    ``payload``, copied byte for byte with their resources and scopes."""
    if not kept:
        return b""
    raw = _RawRequest.FromString(payload)
    sub = _RawRequest()
    src_rs = raw.resource_spans  # type: ignore[attr-defined]
    out_rs: Any = None
    last_i = -1
    for i, j, idx in kept:
        if i != last_i:
            last_i = i
            out_rs = sub.resource_spans.add()  # type: ignore[attr-defined]
            out_rs.resource.extend(src_rs[i].resource)
        src_ss = src_rs[i].scope_spans[j]
        out_ss = out_rs.scope_spans.add()
        out_ss.scope.extend(src_ss.scope)
        spans = src_ss.spans
        out_ss.spans.extend([spans[k] for k in idx])
    return bytes(sub.SerializeToString())


def build_span_batch_from_payload(
    payload: bytes,
    *,
    pricebook: PriceBook | None,
    received_at: float,
    threshold: int = 0,
) -> SpanBatch:
    """:func:`build_span_batch` of a serialized request, parsing in full only what is kept.

    At ``threshold`` 0 the request is parsed and decoded whole.  Otherwise
    :func:`sample_payload` picks the spans of the sampled traces first (a span outside the
    sample costs a reduced parse and one comparison), and only those are parsed in full and
    decoded: the batch equals ``build_span_batch(parsed request, threshold=threshold)``.

    Raises:
        google.protobuf.message.DecodeError: the payload (or its kept part) does not parse.
    """
    if threshold <= 0:
        request = _ExportTraceServiceRequest().FromString(payload)
        return build_span_batch(request, pricebook=pricebook, received_at=received_at)
    part = sample_payload(payload, threshold)
    fraction = 1.0 / adjusted_count(threshold)
    return build_sampled_span_batch([part], pricebook=pricebook, received_at=received_at,
                                    fraction=fraction)  # fmt: skip


def build_sampled_span_batch(
    parts: Sequence[tuple[bytes, Sequence[float]]],
    *,
    pricebook: PriceBook | None,
    received_at: float,
    fraction: float,
) -> SpanBatch:
    """One batch of the kept spans of several requests (:func:`sample_payload` results).

    Serialized requests concatenate into one request (their ``resource_spans`` in order), so
    the parts are parsed and decoded together: the per-batch costs (columns, agent
    resolution) are paid once per coalesced batch, not once per request.

    Args:
        parts: ``(kept spans as a serialized request, their weights)`` in arrival order.
        pricebook: as for :func:`build_span_batch`.
        received_at: the batch's receive time (the latest part's).
        fraction: the batch's ``analysed_fraction`` (the smallest fraction of its parts).

    Raises:
        google.protobuf.message.DecodeError: the kept spans do not parse.
    """
    weights = [w for _, ws in parts for w in ws]
    if not weights:
        return dataclasses.replace(_EMPTY, received_at=received_at, analysed_fraction=fraction)
    request = _ExportTraceServiceRequest().FromString(b"".join(p for p, _ in parts))
    groups = [
        (rs.resource, itertools.chain.from_iterable(ss.spans for ss in rs.scope_spans))
        for rs in request.resource_spans
    ]
    return _columns(groups, len(weights), weights, pricebook, received_at, fraction)


def _ExportTraceServiceRequest() -> type[ExportTraceServiceRequest]:
    # Imported on use: this module is imported by processes that never see a request.
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    return ExportTraceServiceRequest


def resolve_agents(batch: SpanBatch) -> None:
    """Name the agent of every span whose agent is decidable from this batch alone (in place).

    A span without ``gen_ai.agent.name`` (an official instrumentation's chat or HTTP span)
    belongs to its nearest ancestor's agent.  When that ancestor is in the same batch it is
    copied now, so span-level metrics and baselines see it without waiting for assembly; when
    the span's ancestor chain ends at a root of this batch with no agent on the way, the
    Resource's main agent (``gen_ai.main_agent.name``) names it.  Spans whose chain leaves the
    batch stay ``""``: assembly resolves them (same rule, over the whole trace) and the stage
    counts them at completion (:func:`agent_pending`).
    """
    if batch.n == 0:
        return
    agent = batch.agent_name
    _server_main_agents(batch.kind, agent, batch.main_agent)
    todo = np.nonzero(agent == "")[0]
    if todo.shape[0] == 0:
        return
    # Parent index within the batch: -1 for roots, -2 for a parent that is not in the batch.
    keys = [t + s for t, s in zip(batch.trace_id.tolist(), batch.span_id.tolist(), strict=True)]
    pos = {k: j for j, k in enumerate(keys)}
    tids, pids = batch.trace_id.tolist(), batch.parent_span_id.tolist()
    parent = np.full(batch.n, -1, dtype=np.int64)
    for j in todo.tolist():
        p = pids[j]
        if p:
            parent[j] = pos.get(tids[j] + p, -2)
    has = agent != ""
    # Pointer jumping: ptr walks up until a span with an agent, a root (-1) or the edge (-2).
    ptr = np.where(has, np.arange(batch.n), parent)
    for _ in range(64):
        walk = np.nonzero(ptr >= 0)[0]
        walk = walk[~has[ptr[walk]]]
        if walk.shape[0] == 0:
            break
        ptr[walk] = parent[ptr[walk]]
    named = todo[ptr[todo] >= 0]
    named = named[has[ptr[named]]]  # chains deeper than 64 stay for assembly
    agent[named] = agent[ptr[named]]
    rooted = todo[ptr[todo] == -1]
    if rooted.shape[0]:
        agent[rooted] = batch.main_agent[rooted]


def _server_main_agents(kind: I64Array, agent: ObjArray, main_agent: ObjArray) -> None:
    """A SERVER span without an agent is where a call enters its process: it belongs to that
    process's declared main agent, not (by inheritance across the remote hop) to the caller."""
    m = (kind == SPAN_KIND_SERVER) & (agent == "") & (main_agent != "")
    if m.any():
        agent[m] = main_agent[m]


def agent_pending(batch: SpanBatch) -> BoolArray:
    """Spans whose analysis key only assembly can decide: no agent yet and a parent, or an A2A
    CLIENT span that does not name its peer (the peer is the agent of its SERVER child, exported
    by the other process)."""
    m: BoolArray = (batch.agent_name == "") & (batch.parent_span_id != b"")
    m |= (batch.kind == SPAN_KIND_CLIENT) & (batch.a2a_method != "") & (batch.a2a_peer == "")
    return m


_EXTRA, _LABEL, _STR, _INT = 0, 1, 2, 3
_NO_ATTRS: Mapping[str, Any] = {}
_NO_COLUMN: list[Any] = []  # the "column" of keys routed to ``extra`` (never written)


def _normalized(span: Any, route: Mapping[str, tuple[list[Any], int]], i: int) -> dict[str, Any]:
    """Span ``i``'s wanted attributes normalized to the GenAI names, written to the columns."""
    attrs: dict[str, Any] = {}
    for kv in span.attributes:
        if kv.key in route:
            attrs[kv.key] = _any_value(kv.value)
    attrs = _norm.normalize_attributes(attrs)
    for key, value in attrs.items():
        col, how = route.get(key, (_NO_COLUMN, _EXTRA))
        if how == _EXTRA:
            continue
        if how == _LABEL:
            col[i] = _as_label(value)
        elif how == _STR:
            col[i] = _as_str(value)
        else:
            col[i] = _as_int(value)
    return attrs


def _a2a_client_roles(batch: SpanBatch) -> None:
    """On an A2A CLIENT span ``gen_ai.agent.name`` names the *remote* agent (the SDK copies it
    from the peer's Agent Card, as GenAI CLIENT spans do): move it to ``a2a_peer`` and leave
    ``agent_name`` empty, so that assembly fills in the calling agent from the span's parent."""
    m = (batch.kind == SPAN_KIND_CLIENT) & (batch.a2a_method != "") & (batch.agent_name != "")
    if m.any():
        no_peer = m & (batch.a2a_peer == "")
        batch.a2a_peer[no_peer] = batch.agent_name[no_peer]
        batch.agent_name[m] = ""
        # The caller is normally the parent span, exported in the same batch by the same
        # process: name it now, so span-level keys (A2A latency, metrics) carry the caller.
        named = np.nonzero(batch.agent_name != "")[0]
        agent_of = dict(zip(batch.span_id[named].tolist(), batch.agent_name[named].tolist(),
                            strict=True))  # fmt: skip
        for i in np.nonzero(m)[0].tolist():
            batch.agent_name[i] = agent_of.get(batch.parent_span_id[i], "")


def _extras(
    attrs: Mapping[str, Any],
    cols: Mapping[str, list[Any]],
    i: int,
    pricebook: PriceBook | None,
    inference_ops: frozenset[str],
) -> None:
    """Derived values of span ``i``: argument hash, legacy provider, cost."""
    op = cols["operation"][i]
    if op == sc.OP_EXECUTE_TOOL and not cols["tool_args_hash"][i]:
        raw = attrs.get(sc.GEN_AI_TOOL_CALL_ARGUMENTS)
        if raw is not None:
            cols["tool_args_hash"][i] = tool_args_hash(raw)
    if not cols["provider"][i] and attrs.get(sc.GEN_AI_SYSTEM) is not None:
        cols["provider"][i] = _as_str(attrs.get(sc.GEN_AI_SYSTEM))
    if op in inference_ops:
        cols["cost"][i], cols["unpriced"][i] = _price(attrs, cols, i, pricebook)


def _price(
    attrs: Mapping[str, Any],
    cols: Mapping[str, list[Any]],
    i: int,
    pricebook: PriceBook | None,
) -> tuple[float, bool]:
    """Cost of one inference span: the sender's amount when given in USD, else priced here."""
    amount = _as_float(attrs.get(sc.GEN_AI_USAGE_COST_AMOUNT))
    currency = _as_str(attrs.get(sc.GEN_AI_USAGE_COST_CURRENCY)) or "USD"
    if amount is not None and currency.upper() == "USD":
        return amount, False
    tokens_in = cols["input_tokens"][i]
    tokens_out = cols["output_tokens"][i]
    if tokens_in == 0 and tokens_out == 0:
        # Nothing to price; a sender's explicit unpriced flag is still honoured.
        return 0.0, bool(attrs.get(sc.AGENT_COST_UNPRICED) is True)
    model = cols["response_model"][i] or cols["request_model"][i]
    if pricebook is None or not model:
        return 0.0, True
    try:
        price = pricebook.price(
            model=model,
            provider=cols["provider"][i] or None,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cache_read_tokens=cols["cache_read_tokens"][i],
            cache_creation_tokens=cols["cache_creation_tokens"][i],
            reasoning_tokens=cols["reasoning_tokens"][i],
            timestamp=cols["start_ns"][i] or None,  # price at the time of the call
        )
    except Exception:  # a pricing bug must not stop analysis of the batch
        _log.exception("pricing %r failed", model)
        return 0.0, True
    if price is None or price.currency.upper() != "USD":
        return 0.0, True
    return float(price.amount), False


def factorize(values: ObjArray | Iterable[str]) -> tuple[I64Array, ObjArray]:
    """Integer codes and the sorted distinct values of a string column (vectorized)."""
    arr = np.asarray(values, dtype=object)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64), np.empty(0, dtype=object)
    uniq, codes = np.unique(arr.astype(str), return_inverse=True)
    out = np.empty(uniq.shape[0], dtype=object)
    out[:] = uniq.tolist()
    return codes.astype(np.int64).reshape(-1), out


# Operation kinds used as analysis keys (agent, kind, name).
KIND_TOOL = "tool"
KIND_MODEL = "model"
KIND_AGENT = "agent"
KIND_A2A = "a2a"
KIND_OTHER = "other"


def operation_keys(batch: SpanBatch) -> tuple[ObjArray, ObjArray]:
    """Per span the analysis key parts ``(kind, name)``.

    ``tool``/tool name for ``execute_tool``; ``model``/request model for inference; ``a2a``/peer
    agent (or method) for A2A CLIENT spans; ``agent``/agent name for ``invoke_agent``; else
    ``other``/operation name (``span`` when there is none; span names are unbounded).
    """
    op = batch.operation
    is_tool = op == sc.OP_EXECUTE_TOOL
    is_model = batch.is_inference
    is_a2a = (batch.a2a_method != "") & (batch.kind == SPAN_KIND_CLIENT)
    is_agent = op == sc.OP_INVOKE_AGENT
    kind = np.full(batch.n, KIND_OTHER, dtype=object)
    name = np.where(op != "", op, "span").astype(object)
    peer = np.where(batch.a2a_peer != "", batch.a2a_peer, batch.a2a_method)
    for mask, k, v in (
        (is_agent, KIND_AGENT, batch.agent_name),
        (is_a2a, KIND_A2A, peer),
        (is_model, KIND_MODEL, batch.request_model),
        (is_tool, KIND_TOOL, batch.tool_name),
    ):
        kind[mask] = k
        name[mask] = v[mask]
    return kind, name


def group_keys(*columns: ObjArray) -> tuple[list[tuple[str, ...]], I64Array]:
    """Distinct rows of string columns (in order of first appearance) and each row's group.

    Hash-based: two C-level dict passes per row over a C-level ``zip`` of the columns.  Measured 3–6×
    faster than sort-based ``np.unique`` on string columns from 100 to 10,000 rows (numpy sorts
    strings with Python comparisons), and it never overflows a composite integer code.
    """
    n = columns[0].shape[0] if columns else 0
    if n == 0:
        return [], np.zeros(0, dtype=np.int64)
    lists = [c.tolist() for c in columns]
    # dict.fromkeys and map(__getitem__) run in C: no Python frame per row.  The row tuples are
    # made twice rather than kept in a list: short-lived tuples never trigger the cyclic GC,
    # a list of thousands does (measured: full collections of the receiver's heap).
    seen: dict[tuple[str, ...], int] = dict.fromkeys(zip(*lists, strict=True), 0)
    for j, key in enumerate(seen):
        seen[key] = j
    inv = np.fromiter(map(seen.__getitem__, zip(*lists, strict=True)), dtype=np.int64, count=n)
    return list(seen), inv


@dataclasses.dataclass(frozen=True)
class AnalysisKeys:
    """A batch grouped by ``(agent, kind, name)``: the key of each group and each row's group."""

    kind: ObjArray
    name: ObjArray
    keys: list[tuple[str, str, str]]
    inv: I64Array


_KEYS_CACHE: weakref.WeakKeyDictionary[SpanBatch, AnalysisKeys] = weakref.WeakKeyDictionary()


def analysis_keys(batch: SpanBatch) -> AnalysisKeys:
    """The ``(agent, kind, name)`` grouping of ``batch``, computed once per batch and shared by
    the anomaly accumulators, the metrics and the bottleneck aggregates."""
    cached = _KEYS_CACHE.get(batch)
    if cached is None:
        kind, name = operation_keys(batch)
        keys, inv = group_keys(batch.agent_name, kind, name)
        cached = AnalysisKeys(kind, name, keys, inv)  # type: ignore[arg-type]
        _KEYS_CACHE[batch] = cached
    return cached
