# SPDX-License-Identifier: Apache-2.0
"""A2A (Agent2Agent) trace-context propagation and ``a2a.*`` client/server spans.

The A2A protocol has no standard trace-context carrier yet (a2aproject/A2A#2103), so a
delegation from agent A to agent B normally starts a fresh, disconnected trace.  Here the W3C
``traceparent`` / ``tracestate`` / ``baggage`` fields travel inside the A2A message's
``metadata`` map, written and read through the *globally configured* propagators
(``opentelemetry.propagate``), so whatever ``OTEL_PROPAGATORS`` selects is honoured.

Spans follow the GenAI A2A conventions (semantic-conventions-genai ``docs/gen-ai/a2a.md``,
Development): kind CLIENT / SERVER, name ``{a2a.method.name}``, ``a2a.message.id``,
``a2a.task.id``, ``a2a.task.state``, ``gen_ai.conversation.id`` = ``contextId``, the peer's
``gen_ai.agent.*`` from its Agent Card, ``error.type``.  One-way / asynchronous exchanges (push
notifications, task polling) are related with span *links*, not parenting.

Messages may be plain dicts (JSON-RPC shape, camelCase or snake_case keys), a2a-sdk protobuf
``Message`` objects (``metadata`` is a ``google.protobuf.Struct``) or any object with a
``metadata`` attribute holding a mutable mapping.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ParamSpec

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from otel_agents import semconv as sc

__all__ = [
    "ONE_WAY_METHODS",
    "A2ASpan",
    "a2a_client_span",
    "a2a_server_span",
    "extract_a2a_context",
    "inject_a2a_context",
    "start_client_span",
    "start_server_span",
]

_log = logging.getLogger(__name__)
_P = ParamSpec("_P")

_SCOPE = "otel_agents.a2a"

#: Methods whose receiver must not be parented on the sender: the sender does not wait for
#: the receiver's work, so the relation is a link (A2A push-notification delivery).
ONE_WAY_METHODS: frozenset[str] = frozenset({"TaskPushNotification", "PushNotification"})

#: Methods that act on an existing task: their spans link to the span that created the task.
_TASK_FOLLOW_UP_METHODS: frozenset[str] = frozenset(
    {"GetTask", "CancelTask", "SubscribeToTask", "TaskPushNotification", "PushNotification"}
)

# task id -> span context of the client span whose request created / continued it; bounded
# so a long-running client does not grow without limit (LRU eviction).
_TASK_ORIGINS_MAX = 4096
_task_origins: OrderedDict[str, SpanContext] = OrderedDict()
_task_origins_lock = threading.Lock()


def _reinit_after_fork() -> None:
    # a lock held by another thread at fork() would stay locked in the child
    global _task_origins_lock
    _task_origins_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def _remember_task(task_id: str, span_context: SpanContext) -> None:
    if not task_id or not span_context.is_valid:
        return
    with _task_origins_lock:
        _task_origins[task_id] = span_context
        _task_origins.move_to_end(task_id)
        while len(_task_origins) > _TASK_ORIGINS_MAX:
            _task_origins.popitem(last=False)


def _task_origin(task_id: str | None) -> SpanContext | None:
    if not task_id:
        return None
    with _task_origins_lock:
        return _task_origins.get(task_id)


# --------------------------------------------------------------------------------------------
# Field access on the three message shapes
# --------------------------------------------------------------------------------------------
def _get_field(obj: Any, *names: str) -> Any:
    """First non-empty field among ``names`` from a mapping or an object; None if absent."""
    if obj is None:
        return None
    for name in names:
        try:
            value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        except Exception:  # proto getattr on odd objects, properties that raise
            value = None
        if value not in (None, ""):
            return value
    return None


def _metadata_map(message: Any, *, create: bool) -> MutableMapping[str, Any] | None:
    """The message's ``metadata`` map (dict, proto Struct, ...), created when asked."""
    if message is None:
        return None
    if isinstance(message, MutableMapping):
        md = message.get("metadata")
        if md is None and create:
            md = {}
            message["metadata"] = md
        return md if isinstance(md, MutableMapping) or _is_struct(md) else None
    md = getattr(message, "metadata", None)
    if md is None and create:
        try:
            message.metadata = {}
            md = message.metadata
        except Exception:
            return None
    # google.protobuf.Struct is mapping-like (item get/set, keys) without being registered as
    # a MutableMapping; accessing a proto submessage field creates it lazily.
    return md if isinstance(md, MutableMapping) or _is_struct(md) else None


def _is_struct(obj: Any) -> bool:
    return type(obj).__name__ == "Struct" and hasattr(obj, "fields")


def _carrier_from(md: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in list(md.keys()):
        value = md[key]
        if isinstance(value, str):
            out[str(key)] = value
    return out


def inject_a2a_context(message: Any, context: otel_context.Context | None = None) -> None:
    """Writes the W3C trace context (and baggage) of ``context`` into ``message.metadata``.

    Uses the globally configured propagators with a dict carrier.  Never raises.

    Args:
        message: An A2A message: dict, a2a-sdk ``Message`` / ``SendMessageRequest.message``, or
            any object with a mutable ``metadata`` mapping.
        context: The context to propagate; the current context when None.
    """
    try:
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=context)
        if not carrier:
            return
        md = _metadata_map(message, create=True)
        if md is None:
            return
        for key, value in carrier.items():
            md[key] = value
    except Exception:
        _log.debug("A2A context injection failed", exc_info=True)


def extract_a2a_context(
    message: Any, context: otel_context.Context | None = None
) -> otel_context.Context:
    """Reads trace context and baggage from ``message.metadata`` into a new Context.

    Never raises: on a missing or malformed carrier the returned context is ``context`` (or
    the current context) unchanged.

    Args:
        message: An A2A message in any of the shapes ``inject_a2a_context`` accepts.
        context: The context to extend; the current context when None.
    """
    base = context if context is not None else otel_context.get_current()
    try:
        md = _metadata_map(message, create=False)
        if md is None:
            return base
        return propagate.extract(_carrier_from(md), context=base)
    except Exception:
        _log.debug("A2A context extraction failed", exc_info=True)
        return base


# --------------------------------------------------------------------------------------------
# Spans
# --------------------------------------------------------------------------------------------
def _task_state_name(state: Any) -> str | None:
    """Normalizes a task state to the ``TASK_STATE_*`` spelling the conventions use."""
    if state is None or state == "":
        return None
    if isinstance(state, int) and not isinstance(state, bool):
        try:
            from a2a.types import a2a_pb2

            return str(a2a_pb2.TaskState.Name(state))
        except Exception:
            return None
    name = str(getattr(state, "value", state))
    upper = name.upper().replace("-", "_")
    return upper if upper.startswith("TASK_STATE_") else f"TASK_STATE_{upper}"


def _card_attributes(card: Any) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for attr, key in (
        (sc.GEN_AI_AGENT_NAME, "name"),
        (sc.GEN_AI_AGENT_DESCRIPTION, "description"),
        (sc.GEN_AI_AGENT_VERSION, "version"),
    ):
        value = _get_field(card, key)
        if isinstance(value, str) and value:
            attrs[attr] = value
    return attrs


def _message_attributes(message: Any) -> dict[str, str]:
    attrs: dict[str, str] = {}
    message_id = _get_field(message, "messageId", "message_id")
    context_id = _get_field(message, "contextId", "context_id")
    task_id = _get_field(message, "taskId", "task_id")
    if isinstance(message_id, str):
        attrs[sc.A2A_MESSAGE_ID] = message_id
    if isinstance(context_id, str):
        attrs[sc.GEN_AI_CONVERSATION_ID] = context_id
    if isinstance(task_id, str):
        attrs[sc.A2A_TASK_ID] = task_id
    return attrs


class A2ASpan:
    """Handle of one A2A span (yielded by the context managers, returned by ``start_*``).

    Record what the response tells (task id and state, an error code) on it; ``span`` is the
    underlying OpenTelemetry span and ``context`` the Context to make current for work done on
    behalf of this request (span + extracted baggage).
    """

    def __init__(
        self, span: Span, method: str, *, client: bool, context: otel_context.Context
    ) -> None:
        self.span = span
        self.method = method
        self.context = context
        self._client = client

    def set_task(self, task: Any) -> None:
        """Records a Task (or Message) returned by the peer: id, state and contextId."""
        try:
            inner = _get_field(task, "task")  # SendMessageResponse / StreamResponse wrappers
            if inner is not None and (not hasattr(task, "HasField") or _has_field(task, "task")):
                task = inner
            task_id = _get_field(task, "id", "taskId", "task_id")
            if isinstance(task_id, str) and task_id:
                self.span.set_attribute(sc.A2A_TASK_ID, task_id)
                if self._client and self.method in ("SendMessage", "SendStreamingMessage"):
                    _remember_task(task_id, self.span.get_span_context())
            context_id = _get_field(task, "contextId", "context_id")
            if isinstance(context_id, str):
                self.span.set_attribute(sc.GEN_AI_CONVERSATION_ID, context_id)
            status = _get_field(task, "status")
            state = _get_field(status, "state") if status is not None else None
            self.set_task_state(state)
        except Exception:
            _log.debug("A2A set_task failed", exc_info=True)

    def set_task_state(self, state: Any) -> None:
        """Records ``a2a.task.state`` (enum, int or string; stored as ``TASK_STATE_*``)."""
        name = _task_state_name(state)
        if name and name != "TASK_STATE_UNSPECIFIED":
            self.span.set_attribute(sc.A2A_TASK_STATE, name)

    def set_error(self, error_type: str | int, description: str | None = None) -> None:
        """Marks the span failed with ``error.type`` (JSON-RPC / protocol code or class name)."""
        self.span.set_attribute(sc.ERROR_TYPE, str(error_type))
        self.span.set_status(Status(StatusCode.ERROR, description))

    def end(self, exc: BaseException | None = None) -> None:
        """Ends the span, recording ``exc`` (if any) as its error; never raises."""
        try:
            if exc is not None and not isinstance(exc, GeneratorExit):
                self.span.record_exception(exc)
                self.set_error(_error_type(exc), f"{type(exc).__name__}: {exc}")
            self.span.end()
        except Exception:
            _log.debug("A2A span end failed", exc_info=True)


def _has_field(msg: Any, name: str) -> bool:
    try:
        return bool(msg.HasField(name))
    except Exception:
        return False


def _error_type(exc: BaseException) -> str:
    """``error.type`` of a failed A2A call: the JSON-RPC / protocol code, else the class name."""
    # JSON-RPC / A2A errors carry a numeric code; the convention wants the protocol status.
    for attr in ("code", "status_code"):
        code = getattr(exc, attr, None)
        if isinstance(code, (int, str)) and not isinstance(code, bool) and code != "":
            return str(code)
    # a2a-sdk errors keep their JSON-RPC code in a class -> code table, not on the instance
    try:
        from a2a.utils.errors import JSON_RPC_ERROR_CODE_MAP

        for cls in type(exc).__mro__:
            mapped = JSON_RPC_ERROR_CODE_MAP.get(cls)
            if mapped is not None:
                return str(mapped)
    except Exception:  # a2a-sdk not installed or a different layout
        pass
    return type(exc).__qualname__


def _tracer(tracer_provider: trace.TracerProvider | None) -> trace.Tracer:
    return trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)


def _links(extra: Sequence[SpanContext | Link] | None) -> list[Link]:
    out: list[Link] = []
    for item in extra or ():
        if isinstance(item, Link):
            out.append(item)
        elif isinstance(item, SpanContext) and item.is_valid:
            out.append(Link(item))
    return out


def _start_attributes(
    method: str,
    message: Any,
    card: Any,
    task_id: str | None,
    context_id: str | None,
    attributes: Mapping[str, Any] | None,
    *,
    client: bool = False,
) -> dict[str, Any]:
    attrs: dict[str, Any] = {sc.A2A_METHOD_NAME: method}
    try:
        attrs.update(_message_attributes(message))
        card_attrs = _card_attributes(card)
        attrs.update(card_attrs)
        if client and sc.GEN_AI_AGENT_NAME in card_attrs:
            # on a CLIENT span the card is the remote agent's: name the peer explicitly too
            attrs[sc.AGENT_A2A_PEER_AGENT] = card_attrs[sc.GEN_AI_AGENT_NAME]
    except Exception:
        _log.debug("A2A attribute extraction failed", exc_info=True)
    if task_id:
        attrs[sc.A2A_TASK_ID] = task_id
    if context_id:
        attrs[sc.GEN_AI_CONVERSATION_ID] = context_id
    if attributes:
        attrs.update(attributes)
    return attrs


def start_client_span(
    method: str,
    message: Any = None,
    *,
    peer_card: Any = None,
    task_id: str | None = None,
    context_id: str | None = None,
    links: Sequence[SpanContext | Link] | None = None,
    attributes: Mapping[str, Any] | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> A2ASpan:
    """Starts a CLIENT span ``{method}``, not current; its context goes into ``message.metadata``.

    Applications use the ``with`` form, :func:`a2a_client_span`; this one is for
    instrumentations whose request spans several callbacks. The caller must call
    ``handle.end()``; attach ``handle.context`` around work that should be its child.

    Follow-up calls on a task this process created (``GetTask`` polling, ``CancelTask``,
    ``SubscribeToTask``) get a link to the span that created the task.

    Args:
        method: ``a2a.method.name`` (``SendMessage``, ``GetTask``, ...).
        message: The outgoing A2A message (its metadata receives the trace context); None for
            methods without a message.
        peer_card: The remote agent's Agent Card (dict or a2a-sdk ``AgentCard``) when known.
        task_id: ``a2a.task.id`` when the request addresses a task.
        context_id: ``gen_ai.conversation.id`` when not in the message.
        links: Extra span contexts / links to attach.
        attributes: Extra span attributes.
        tracer_provider: Provider to use; the global one when None.

    Returns:
        The span's handle.
    """
    all_links = _links(links)
    origin = _task_origin(task_id) if method in _TASK_FOLLOW_UP_METHODS else None
    if origin is not None:
        all_links.append(Link(origin))
    span = _tracer(tracer_provider).start_span(
        method,
        kind=SpanKind.CLIENT,
        attributes=_start_attributes(
            method, message, peer_card, task_id, context_id, attributes, client=True
        ),
        links=all_links,
    )
    ctx = trace.set_span_in_context(span)
    if message is not None:
        inject_a2a_context(message, ctx)
    return A2ASpan(span, method, client=True, context=ctx)


def start_server_span(
    method: str,
    message: Any = None,
    *,
    agent_card: Any = None,
    one_way: bool | None = None,
    carrier_message: Any = None,
    task_id: str | None = None,
    context_id: str | None = None,
    links: Sequence[SpanContext | Link] | None = None,
    attributes: Mapping[str, Any] | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> A2ASpan:
    """Starts a SERVER span ``{method}``, not current, parented on the context ``message`` carries.

    Applications use the ``with`` form, :func:`a2a_server_span`. The caller must call
    ``handle.end()``; attach ``handle.context`` (span + the extracted baggage) around the
    request's work. For one-way methods (push-notification delivery; or ``one_way=True``) the
    remote span becomes a *link* and the span stays in the receiver's current trace, because the
    sender never waits for this work.

    Args:
        method: ``a2a.method.name``.
        message: The incoming A2A message (attributes and, by default, the carrier).
        agent_card: This agent's own Agent Card, for ``gen_ai.agent.*``.
        one_way: Link instead of parent; default: ``method in ONE_WAY_METHODS``.
        carrier_message: Read the trace context from this object instead of ``message``.
        task_id: ``a2a.task.id`` when the request addresses a task.
        context_id: ``gen_ai.conversation.id`` when not in the message.
        links: Extra span contexts / links to attach.
        attributes: Extra span attributes.
        tracer_provider: Provider to use; the global one when None.

    Returns:
        The span's handle.
    """
    carrier = carrier_message if carrier_message is not None else message
    current = otel_context.get_current()
    extracted = extract_a2a_context(carrier, current)
    remote = trace.get_current_span(extracted).get_span_context()
    remote_is_new = remote.is_valid and remote != trace.get_current_span(current).get_span_context()
    if one_way is None:
        one_way = method in ONE_WAY_METHODS
    all_links = _links(links)
    if one_way:
        # the sender does not wait for this work: link to it, stay in the receiver's trace
        parent = current
        if remote_is_new:
            all_links.append(Link(remote))
    else:
        parent = extracted
    span = _tracer(tracer_provider).start_span(
        method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes=_start_attributes(method, message, agent_card, task_id, context_id, attributes),
        links=all_links,
    )
    # baggage crosses in both cases: it describes the conversation, not the causal parent
    ctx = trace.set_span_in_context(span, extracted)
    return A2ASpan(span, method, client=False, context=ctx)


@contextmanager
def _run(handle: A2ASpan) -> Iterator[A2ASpan]:
    token = otel_context.attach(handle.context)
    try:
        yield handle
    except BaseException as exc:
        handle.end(exc)
        raise
    else:
        handle.end()
    finally:
        otel_context.detach(token)


def _with_form(
    start: Callable[_P, A2ASpan], name: str, doc: str
) -> Callable[_P, AbstractContextManager[A2ASpan]]:
    """The ``with`` form of a ``start_*_span`` function, taking exactly its arguments.

    The span starts on entering the block, is current inside it, and ends on leaving it; an
    escaping exception is recorded on the span first and then propagates.
    """

    @contextmanager
    def scope(*args: _P.args, **kwargs: _P.kwargs) -> Iterator[A2ASpan]:
        with _run(start(*args, **kwargs)) as handle:
            yield handle

    scope.__name__ = scope.__qualname__ = name
    scope.__doc__ = doc
    # help() and IDEs show the start function's parameters under the public name
    scope.__signature__ = inspect.signature(start).replace(  # type: ignore[attr-defined]
        return_annotation="AbstractContextManager[A2ASpan]"
    )
    return scope


a2a_client_span = _with_form(
    start_client_span,
    "a2a_client_span",
    """Starts a CLIENT span ``{method}`` and injects its context into ``message.metadata``.

    The span is current inside the ``with`` block. Takes the arguments of
    :func:`start_client_span` (``method``, ``message``, ``peer_card``, ``task_id``,
    ``context_id``, ``links``, ``attributes``, ``tracer_provider``).

    Example::

        msg = {"messageId": "m1", "contextId": "c1", "role": "user", "parts": [...]}
        with a2a_client_span("SendMessage", msg, peer_card=card) as a2a:
            result = post_jsonrpc("SendMessage", {"message": msg})
            a2a.set_task(result.get("task"))
    """,
)

a2a_server_span = _with_form(
    start_server_span,
    "a2a_server_span",
    """Starts a SERVER span ``{method}`` parented on the context carried by ``message``.

    The span and the extracted baggage are current inside the ``with`` block. Takes the
    arguments of :func:`start_server_span` (``method``, ``message``, ``agent_card``,
    ``one_way``, ``carrier_message``, ``task_id``, ``context_id``, ``links``, ``attributes``,
    ``tracer_provider``); one-way methods link to the sender instead of continuing its trace.

    Example::

        with a2a_server_span("SendMessage", params["message"], agent_card=my_card) as a2a:
            task = handle(params)
            a2a.set_task(task)
    """,
)
