# SPDX-License-Identifier: Apache-2.0
"""``SpanBatch``: an OTLP trace request decoded once into normalized, priced columns.

Every analysis stage works on these columns (numpy arrays of equal length ``n``) instead of
walking protobuf messages; the only per-span Python loop in the analysis path is the decode
here, which touches each attribute once and keeps only the keys analysis needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from otel_agents import semconv as sc

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    from otel_agents._cost import PriceBook

__all__ = ["SPAN_KIND_CLIENT", "SPAN_KIND_SERVER", "SpanBatch", "build_span_batch"]

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
    "a2a_task_id", "a2a_peer",
)  # fmt: skip
_I64_COLUMNS = (
    "kind", "start_ns", "end_ns", "status_code", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_creation_tokens", "reasoning_tokens",
)  # fmt: skip
_F64_COLUMNS = ("cost",)
_BOOL_COLUMNS = ("unpriced",)
COLUMNS = _OBJ_COLUMNS + _I64_COLUMNS + _F64_COLUMNS + _BOOL_COLUMNS


@dataclasses.dataclass(frozen=True, eq=False)
class SpanBatch:
    """Spans as columns of equal length ``n`` (see docs/architecture.md "SpanBatch").

    IDs are ``bytes`` (16-byte trace IDs, 8-byte span IDs, ``b""`` for roots); strings absent
    on a span are ``""``; token counts absent are 0; ``cost`` is USD on inference spans only
    (sender's ``gen_ai.usage.cost.amount`` or priced here from tokens), 0 elsewhere;
    ``unpriced`` marks inference spans with tokens that nobody could price. ``received_at``
    is the receiver's clock (unix seconds) when the request arrived.
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
        return SpanBatch(**cols, received_at=self.received_at)

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
        return SpanBatch(**cols, received_at=max(b.received_at for b in batches))

    @staticmethod
    def empty(received_at: float = 0.0) -> SpanBatch:
        """A batch with no spans."""
        return _from_lists({c: [] for c in COLUMNS}, received_at)


def _from_lists(cols: Mapping[str, list[Any]], received_at: float) -> SpanBatch:
    arrays: dict[str, Any] = {}
    for c in _OBJ_COLUMNS:
        a = np.empty(len(cols[c]), dtype=object)
        a[:] = cols[c]
        arrays[c] = a
    for c in _I64_COLUMNS:
        arrays[c] = np.asarray(cols[c], dtype=np.int64)
    for c in _F64_COLUMNS:
        arrays[c] = np.asarray(cols[c], dtype=np.float64)
    for c in _BOOL_COLUMNS:
        arrays[c] = np.asarray(cols[c], dtype=np.bool_)
    return SpanBatch(**arrays, received_at=received_at)


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

Normalizer = Callable[[Mapping[str, Any]], dict[str, Any]]


def _load_normalizer() -> tuple[frozenset[str], Normalizer | None]:
    """The SDK's dialect normalization, shared with the receiver (never copied here)."""
    try:
        from otel_agents._normalize import (  # type: ignore[import-not-found,unused-ignore]
            ALIASES,
            normalize_attributes,
        )
    except ImportError:  # the SDK-core part is not installed in this tree yet
        _log.warning("otel_agents._normalize is missing: dialect attributes are not normalized")
        return frozenset(), None
    # Keys that only trigger inference of other keys (span-kind hints) are read too.
    extra = {"openinference.span.kind", "traceloop.span.kind"}
    return frozenset(ALIASES) | frozenset(extra), normalize_attributes


_DIALECT_KEYS, _NORMALIZE = _load_normalizer()
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
        return max(v, 0)
    if isinstance(v, float) and v == v:
        return max(int(v), 0)
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


def _as_str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, tuple):
        return ",".join(str(x) for x in v)
    return str(v)


def args_hash(arguments: str) -> str:
    """Stable short hash of tool-call arguments (used when the sender sent arguments but no
    ``agent.tool.args_hash``)."""
    return hashlib.blake2b(arguments.encode("utf-8", "replace"), digest_size=8).hexdigest()


def build_span_batch(
    request: ExportTraceServiceRequest,
    *,
    pricebook: PriceBook | None,
    received_at: float,
) -> SpanBatch:
    """Decode an OTLP trace request once into a normalized, priced :class:`SpanBatch`.

    Args:
        request: the decoded (and validated) OTLP request.
        pricebook: prices inference spans that have tokens but no
            ``gen_ai.usage.cost.amount``; ``None`` leaves them unpriced.
        received_at: receiver clock (unix seconds) when the request arrived.

    Returns:
        The batch; spans keep request order.
    """
    cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    append = {c: cols[c].append for c in COLUMNS}
    wanted = _WANTED
    normalize = _NORMALIZE
    inference_ops = sc.INFERENCE_OPERATIONS
    for rs in request.resource_spans:
        service = ""
        for kv in rs.resource.attributes:
            if kv.key == "service.name":
                service = _as_str(_any_value(kv.value))
                break
        for ss in rs.scope_spans:
            for span in ss.spans:
                attrs: dict[str, Any] = {}
                for kv in span.attributes:
                    if kv.key in wanted:
                        attrs[kv.key] = _any_value(kv.value)  # duplicate keys: last wins
                if normalize is not None and attrs and not attrs.keys() <= _CANONICAL:
                    attrs = normalize(attrs)
                append["trace_id"](span.trace_id)
                append["span_id"](span.span_id)
                append["parent_span_id"](span.parent_span_id)
                append["name"](span.name)
                append["service_name"](service)
                append["kind"](span.kind)
                append["start_ns"](span.start_time_unix_nano)
                append["end_ns"](span.end_time_unix_nano)
                append["status_code"](span.status.code)
                for key, col in _STR_KEYS.items():
                    append[col](_as_str(attrs.get(key)))
                for key, col in _INT_KEYS.items():
                    append[col](_as_int(attrs.get(key)))
                op = _as_str(attrs.get(sc.GEN_AI_OPERATION_NAME))
                if not cols["tool_args_hash"][-1]:
                    raw = attrs.get(sc.GEN_AI_TOOL_CALL_ARGUMENTS)
                    if raw is not None and op == sc.OP_EXECUTE_TOOL:
                        cols["tool_args_hash"][-1] = args_hash(_as_str(raw))
                if not cols["provider"][-1] and attrs.get(sc.GEN_AI_SYSTEM) is not None:
                    cols["provider"][-1] = _as_str(attrs.get(sc.GEN_AI_SYSTEM))
                cost, unpriced = 0.0, False
                if op in inference_ops:
                    cost, unpriced = _price(attrs, cols, pricebook, received_at)
                append["cost"](cost)
                append["unpriced"](unpriced)
    return _from_lists(cols, received_at)


def _price(
    attrs: Mapping[str, Any],
    cols: Mapping[str, list[Any]],
    pricebook: PriceBook | None,
    received_at: float,
) -> tuple[float, bool]:
    """Cost of one inference span: the sender's amount when given in USD, else priced here."""
    amount = _as_float(attrs.get(sc.GEN_AI_USAGE_COST_AMOUNT))
    currency = _as_str(attrs.get(sc.GEN_AI_USAGE_COST_CURRENCY)) or "USD"
    if amount is not None and currency.upper() == "USD":
        return amount, False
    tokens_in = cols["input_tokens"][-1]
    tokens_out = cols["output_tokens"][-1]
    if tokens_in == 0 and tokens_out == 0:
        # Nothing to price; a sender's explicit unpriced flag is still honoured.
        return 0.0, bool(attrs.get(sc.AGENT_COST_UNPRICED) is True)
    model = cols["response_model"][-1] or cols["request_model"][-1]
    if pricebook is None or not model:
        return 0.0, True
    try:
        price = pricebook.price(
            model=model,
            provider=cols["provider"][-1] or None,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cache_read_tokens=cols["cache_read_tokens"][-1],
            cache_creation_tokens=cols["cache_creation_tokens"][-1],
            reasoning_tokens=cols["reasoning_tokens"][-1],
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
    """Distinct rows of string columns and each row's group number (vectorized)."""
    if not columns or columns[0].shape[0] == 0:
        return [], np.zeros(0, dtype=np.int64)
    code = np.zeros(columns[0].shape[0], dtype=np.int64)
    uniques = []
    for col in columns:
        c, u = factorize(col)
        code = code * max(u.shape[0], 1) + c
        uniques.append(u)
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    keys = list(zip(*(col[first].tolist() for col in columns), strict=True))
    return [tuple(str(x) for x in k) for k in keys], inverse.reshape(-1).astype(np.int64)
