# SPDX-License-Identifier: Apache-2.0
"""``BaseInstrumentor`` for the ``a2a-sdk`` package (1.x): A2A tracing with no code change.

Client side: every A2A call of the JSON-RPC, REST and gRPC client transports
(``send_message``, ``send_message_streaming``, ``get_task``, ...) runs in a CLIENT span
``{a2a.method.name}``; the span's trace context is injected into the outgoing message's
``metadata`` (the carrier the A2A context-propagation proposal uses) *and* into the call's
service parameters, which the transports send as HTTP headers / gRPC metadata, so methods
without a message (``GetTask`` polling, ``CancelTask``) stay connected too.

Server side: the request-handler entry points (``on_message_send``, ``on_get_task``, ...) of
``DefaultRequestHandlerV2`` and ``LegacyRequestHandler`` run in a SERVER span parented on the
context extracted from the message metadata, else from the request headers / gRPC metadata.
The agent executor's spans become its children.

Push notifications: ``BasePushNotificationSender`` deliveries run in a CLIENT span
``TaskPushNotification`` whose trace context is added to the webhook request's headers (through an
httpx request hook on the sender's client that is active only inside that span).  The receiving
webhook is application code: ``a2a_server_span("TaskPushNotification", carrier_message={"metadata":
headers})`` there *links* to the delivery span (one-way message) instead of parenting on it.

The wrapping is done on the classes (so it covers clients and handlers created before
``instrument()``) and undone by ``uninstrument()``.  Any failure inside the wrappers is logged
and the original call proceeds unchanged.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from otel_agents._a2a import A2ASpan, start_client_span, start_server_span

__all__ = ["A2AInstrumentor"]

_log = logging.getLogger(__name__)

_INSTRUMENTS = ("a2a-sdk >= 1.0, < 2",)

# transport method -> a2a.method.name (the gRPC service method names the conventions use)
_CLIENT_METHODS: dict[str, str] = {
    "send_message": "SendMessage",
    "send_message_streaming": "SendStreamingMessage",
    "get_task": "GetTask",
    "list_tasks": "ListTasks",
    "cancel_task": "CancelTask",
    "subscribe": "SubscribeToTask",
    "get_extended_agent_card": "GetExtendedAgentCard",
    "create_task_push_notification_config": "CreateTaskPushNotificationConfig",
    "get_task_push_notification_config": "GetTaskPushNotificationConfig",
    "list_task_push_notification_configs": "ListTaskPushNotificationConfigs",
    "delete_task_push_notification_config": "DeleteTaskPushNotificationConfig",
}
_CLIENT_STREAMING = frozenset({"send_message_streaming", "subscribe"})

_SERVER_METHODS: dict[str, str] = {
    "on_message_send": "SendMessage",
    "on_message_send_stream": "SendStreamingMessage",
    "on_get_task": "GetTask",
    "on_list_tasks": "ListTasks",
    "on_cancel_task": "CancelTask",
    "on_subscribe_to_task": "SubscribeToTask",
    "on_get_extended_agent_card": "GetExtendedAgentCard",
    "on_create_task_push_notification_config": "CreateTaskPushNotificationConfig",
    "on_get_task_push_notification_config": "GetTaskPushNotificationConfig",
    "on_list_task_push_notification_configs": "ListTaskPushNotificationConfigs",
    "on_delete_task_push_notification_config": "DeleteTaskPushNotificationConfig",
}
_SERVER_STREAMING = frozenset({"on_message_send_stream", "on_subscribe_to_task"})

_MARK = "__otel_agents_wrapped__"


def _importable(specs: Sequence[tuple[str, str]]) -> list[type]:
    """The classes of ``(module, name)`` that import; the others are logged and skipped."""
    classes: list[type] = []
    for module, name in specs:
        try:
            classes.append(getattr(__import__(module, fromlist=[name]), name))
        except Exception:  # optional extras (grpc) not installed
            _log.debug("a2a instrumentor: %s.%s unavailable", module, name, exc_info=True)
    return classes


def _client_classes() -> list[type]:
    return _importable(
        (
            ("a2a.client.transports.jsonrpc", "JsonRpcTransport"),
            ("a2a.client.transports.rest", "RestTransport"),
            ("a2a.client.transports.grpc", "GrpcTransport"),
        )
    )


def _server_classes() -> list[type]:
    return _importable(
        (
            ("a2a.server.request_handlers.default_request_handler_v2", "DefaultRequestHandlerV2"),
            ("a2a.server.request_handlers.default_request_handler", "LegacyRequestHandler"),
        )
    )


# --------------------------------------------------------------------------------------------
# Request inspection
# --------------------------------------------------------------------------------------------
def _request_message(request: Any) -> Any:
    """The A2A Message inside a SendMessageRequest, else None."""
    try:
        if type(request).__name__ == "SendMessageRequest" and request.HasField("message"):
            return request.message
    except Exception:
        pass
    return None


def _request_task_id(request: Any) -> str | None:
    for field in ("task_id", "id"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value and type(request).__name__ != "SendMessageRequest":
            return value
    return None


def _with_trace_headers(context: Any, span_ctx: otel_context.Context) -> Any:
    """A copy of the ClientCallContext whose service parameters carry the trace context."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=span_ctx)
    if not carrier:
        return context
    from a2a.client.client import ClientCallContext

    if context is None:
        return ClientCallContext(service_parameters=carrier)
    params = dict(context.service_parameters or {})
    params.update(carrier)
    return context.model_copy(update={"service_parameters": params})


def _record_result(handle: A2ASpan, result: Any) -> None:
    if result is None:
        return
    name = type(result).__name__
    if name in ("SendMessageResponse", "StreamResponse"):
        if _has(result, "task"):
            handle.set_task(result.task)
        elif _has(result, "message"):
            msg = result.message
            if getattr(msg, "task_id", ""):
                handle.span.set_attribute("a2a.task.id", msg.task_id)
        elif _has(result, "status_update"):
            handle.set_task_state(result.status_update.status.state)
    elif name == "Task":
        handle.set_task(result)


def _has(msg: Any, field: str) -> bool:
    try:
        return bool(msg.HasField(field))
    except Exception:
        return False


# --------------------------------------------------------------------------------------------
# Optional agent event records (instrument(emit_events=True))
# --------------------------------------------------------------------------------------------
class _EventSettings:
    enabled = False
    logger_provider: Any = None


def _emit_a2a_event(handle: A2ASpan, sent: bool) -> None:
    """``agent.a2a.sent`` / ``agent.a2a.received`` record correlated with the A2A span."""
    if not _EventSettings.enabled:
        return
    try:
        from otel_agents import semconv as sc
        from otel_agents._events import emit_agent_event

        attrs = getattr(handle.span, "attributes", None) or {}
        emit_agent_event(
            sc.AGENT_EVENT_A2A_SENT if sent else sc.AGENT_EVENT_A2A_RECEIVED,
            {
                sc.A2A_METHOD_NAME: handle.method,
                sc.A2A_MESSAGE_ID: attrs.get(sc.A2A_MESSAGE_ID),
                sc.A2A_TASK_ID: attrs.get(sc.A2A_TASK_ID),
                sc.GEN_AI_CONVERSATION_ID: attrs.get(sc.GEN_AI_CONVERSATION_ID),
                sc.AGENT_A2A_PEER_AGENT: attrs.get(sc.AGENT_A2A_PEER_AGENT),
                # on a SERVER span the card attributes are this agent's own
                sc.GEN_AI_AGENT_NAME: None if sent else attrs.get(sc.GEN_AI_AGENT_NAME),
            },
            logger_provider=_EventSettings.logger_provider,
            context=handle.context,
        )
    except Exception:
        _log.debug("a2a instrumentor: event failed", exc_info=True)


# --------------------------------------------------------------------------------------------
# Client wrappers
# --------------------------------------------------------------------------------------------
def _start_client(self: Any, method: str, request: Any, tp: Any) -> A2ASpan | None:
    try:
        handle = start_client_span(
            method,
            _request_message(request),
            peer_card=getattr(self, "agent_card", None),
            task_id=_request_task_id(request),
            tracer_provider=tp,
        )
    except Exception:
        _log.debug("a2a instrumentor: client span failed", exc_info=True)
        return None
    _emit_a2a_event(handle, sent=True)
    return handle


def _inject_headers(handle: A2ASpan, kwargs: dict[str, Any]) -> None:
    try:
        kwargs["context"] = _with_trace_headers(kwargs.get("context"), handle.context)
    except Exception:
        _log.debug("a2a instrumentor: header injection failed", exc_info=True)


def _safe_record(handle: A2ASpan, result: Any) -> None:
    try:
        _record_result(handle, result)
    except Exception:
        _log.debug("a2a instrumentor: result recording failed", exc_info=True)


async def _await_in_span(handle: A2ASpan, call: Callable[[], Awaitable[Any]]) -> Any:
    """Awaits ``call()`` with the span current, records the result and ends the span."""
    token = otel_context.attach(handle.context)
    try:
        result = await call()
    except BaseException as exc:
        handle.end(exc)
        raise
    finally:
        otel_context.detach(token)
    _safe_record(handle, result)
    handle.end()
    return result


def _wrap_client(original: Callable[..., Any], method: str, tp: Any) -> Callable[..., Any]:
    @functools.wraps(original)
    async def wrapper(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        handle = _start_client(self, method, request, tp)
        if handle is None:
            return await original(self, request, *args, **kwargs)
        _inject_headers(handle, kwargs)
        return await _await_in_span(handle, lambda: original(self, request, *args, **kwargs))

    setattr(wrapper, _MARK, original)
    return wrapper


async def _stepwise(agen: Any, handle: A2ASpan) -> AsyncIterator[Any]:
    """Drives ``agen`` with ``handle.context`` current only during each step.

    A context attached in an async generator must not stay attached across ``yield``: the
    consumer (an SSE response, a task group) may resume it in another task / Context.
    """
    exc_seen: BaseException | None = None
    try:
        while True:
            token = otel_context.attach(handle.context)
            try:
                item = await agen.__anext__()
            except StopAsyncIteration:
                break
            finally:
                otel_context.detach(token)
            _safe_record(handle, item)
            yield item
    except BaseException as exc:
        exc_seen = exc
        raise
    finally:
        try:
            await agen.aclose()
        finally:
            handle.end(exc_seen)


def _wrap_client_stream(original: Callable[..., Any], method: str, tp: Any) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Any, request: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        handle = _start_client(self, method, request, tp)
        if handle is None:
            result: AsyncIterator[Any] = original(self, request, *args, **kwargs)
            return result
        _inject_headers(handle, kwargs)
        return _stepwise(original(self, request, *args, **kwargs), handle)

    setattr(wrapper, _MARK, original)
    return wrapper


# --------------------------------------------------------------------------------------------
# Server wrappers
# --------------------------------------------------------------------------------------------
def _header_carrier(call_context: Any) -> dict[str, Any] | None:
    """Trace-context carrier from HTTP headers or gRPC invocation metadata."""
    state = getattr(call_context, "state", None)
    if state is None:
        return None
    headers = state.get("headers")
    if isinstance(headers, dict):
        return {"metadata": {str(k).lower(): v for k, v in headers.items()}}
    grpc_ctx = state.get("grpc_context")
    if grpc_ctx is not None:
        try:
            return {"metadata": {k.lower(): v for k, v in grpc_ctx.invocation_metadata()}}
        except Exception:
            return None
    return None


def _start_server(
    self: Any, method: str, params: Any, call_context: Any, tp: Any
) -> A2ASpan | None:
    try:
        message = _request_message(params)
        carrier: Any = message
        try:
            has_md = message is not None and "traceparent" in message.metadata
        except Exception:
            has_md = False
        if not has_md:
            carrier = _header_carrier(call_context)
        handle = start_server_span(
            method,
            message,
            agent_card=getattr(self, "_agent_card", None),
            carrier_message=carrier if carrier is not None else {},
            task_id=_request_task_id(params),
            tracer_provider=tp,
        )
    except Exception:
        _log.debug("a2a instrumentor: server span failed", exc_info=True)
        return None
    _emit_a2a_event(handle, sent=False)
    return handle


def _wrap_server(original: Callable[..., Any], method: str, tp: Any) -> Callable[..., Any]:
    @functools.wraps(original)
    async def wrapper(
        self: Any, params: Any, context: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        handle = _start_server(self, method, params, context, tp)
        if handle is None:
            return await original(self, params, context, *args, **kwargs)
        return await _await_in_span(
            handle, lambda: original(self, params, context, *args, **kwargs)
        )

    setattr(wrapper, _MARK, original)
    return wrapper


def _wrap_server_stream(original: Callable[..., Any], method: str, tp: Any) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(
        self: Any, params: Any, context: Any = None, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        handle = _start_server(self, method, params, context, tp)
        if handle is None:
            result: AsyncIterator[Any] = original(self, params, context, *args, **kwargs)
            return result
        # an async generator's body runs only when stepped; _stepwise makes the span current
        # for each step, so the handler (and the agent executor it starts) are its children
        agen = original(self, params, context, *args, **kwargs)
        return _stepwise(agen, handle)

    setattr(wrapper, _MARK, original)
    return wrapper


# HTTP entry points of the a2a-sdk servers: (module, class, methods taking a starlette Request)
_HTTP_ENTRIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("a2a.server.routes.jsonrpc_dispatcher", "JsonRpcDispatcher", ("handle_requests",)),
    (
        "a2a.server.routes.rest_dispatcher",
        "RestDispatcher",
        (
            "on_message_send",
            "on_message_send_stream",
            "on_cancel_task",
            "on_subscribe_to_task",
            "on_get_task",
            "get_push_notification",
            "delete_push_notification",
            "set_push_notification",
            "list_push_notifications",
            "list_tasks",
        ),
    ),
)


def _wrap_http_entry(original: Callable[..., Any], method: str, tp: Any) -> Callable[..., Any]:
    """Continues the caller's trace from the HTTP headers around the whole dispatch.

    Like an ASGI server instrumentation would: without it the a2a-sdk's own dispatcher spans
    start a separate trace.  Skipped when a server span is already current (the app runs an
    ASGI instrumentation) or the request carries no trace context.
    """

    @functools.wraps(original)
    async def wrapper(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        token = None
        try:
            from opentelemetry import propagate, trace

            if not trace.get_current_span().get_span_context().is_valid:
                headers = {k.lower(): v for k, v in request.headers.items()}
                if "traceparent" in headers:
                    token = otel_context.attach(propagate.extract(headers))
        except Exception:
            _log.debug("a2a instrumentor: header extraction failed", exc_info=True)
        try:
            return await original(self, request, *args, **kwargs)
        finally:
            if token is not None:
                otel_context.detach(token)

    setattr(wrapper, _MARK, original)
    return wrapper


# --------------------------------------------------------------------------------------------
# Push notifications (server -> client webhook, one-way)
# --------------------------------------------------------------------------------------------
PUSH_METHOD = "TaskPushNotification"

# Context of the delivery span for the current asyncio task; read by the httpx request hook so
# concurrent deliveries (asyncio.gather) each carry their own span.
_push_context: contextvars.ContextVar[otel_context.Context | None] = contextvars.ContextVar(
    "otel_agents_a2a_push_context", default=None
)
_HOOK_MARK = "__otel_agents_push_hook__"


async def _inject_push_headers(request: Any) -> None:
    """httpx request hook: adds the delivery span's trace context to the webhook request."""
    ctx = _push_context.get()
    if ctx is None:
        return
    try:
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=ctx)
        for key, value in carrier.items():
            request.headers[key] = value
    except Exception:
        _log.debug("a2a instrumentor: push header injection failed", exc_info=True)


def _ensure_push_hook(client: Any) -> None:
    if client is None or getattr(client, _HOOK_MARK, False):
        return
    hooks = dict(client.event_hooks)
    hooks["request"] = [*hooks.get("request", []), _inject_push_headers]
    client.event_hooks = hooks
    setattr(client, _HOOK_MARK, True)


def _record_push_event(handle: A2ASpan, event: Any) -> None:
    name = type(event).__name__
    if name == "Task":
        handle.set_task(event)
    elif name in ("TaskStatusUpdateEvent", "TaskArtifactUpdateEvent"):
        context_id = getattr(event, "context_id", "")
        if context_id:
            handle.span.set_attribute("gen_ai.conversation.id", context_id)
        if name == "TaskStatusUpdateEvent":
            handle.set_task_state(event.status.state)


def _wrap_push_dispatch(original: Callable[..., Any], method: str, tp: Any) -> Callable[..., Any]:
    @functools.wraps(original)
    async def wrapper(
        self: Any, event: Any, push_info: Any, task_id: str, *args: Any, **kwargs: Any
    ) -> Any:
        try:
            handle = start_client_span(PUSH_METHOD, task_id=task_id or None, tracer_provider=tp)
        except Exception:
            _log.debug("a2a instrumentor: push span failed", exc_info=True)
            return await original(self, event, push_info, task_id, *args, **kwargs)
        try:
            _record_push_event(handle, event)
            _ensure_push_hook(getattr(self, "_client", None))
        except Exception:
            _log.debug("a2a instrumentor: push span set-up failed", exc_info=True)
        push_token = _push_context.set(handle.context)
        token = otel_context.attach(handle.context)
        try:
            delivered = await original(self, event, push_info, task_id, *args, **kwargs)
        except BaseException as exc:
            handle.end(exc)
            raise
        finally:
            otel_context.detach(token)
            _push_context.reset(push_token)
        if delivered is False:
            # the sender logs and swallows delivery errors; the span still says it failed
            handle.set_error("_OTHER", "push notification not delivered")
        handle.end()
        return delivered

    setattr(wrapper, _MARK, original)
    return wrapper


def _make(
    maker: Callable[[Callable[..., Any], str, Any], Callable[..., Any]],
    method: str,
    tp: Any,
    original: Callable[..., Any],
) -> Callable[..., Any]:
    return maker(original, method, tp)


class A2AInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments ``a2a-sdk`` clients and servers for A2A tracing.

    Example::

        A2AInstrumentor().instrument(tracer_provider=provider)   # or zero-code: automatic

    Keyword Args (to ``instrument``):
        tracer_provider: the provider for the A2A spans; the global one when omitted.
        emit_events: also emit ``agent.a2a.sent`` / ``agent.a2a.received`` event records
            (off by default: one log record per A2A call).
        logger_provider: the provider for those records; the global one when omitted.
    """

    _patched: list[tuple[type, str, Any]]

    def __init__(self) -> None:
        super().__init__()
        # BaseInstrumentor is a per-class singleton and __init__ runs on every construction:
        # keep the record of what is patched, or uninstrument() could not restore it.
        if not hasattr(self, "_patched"):
            self._patched = []

    def instrumentation_dependencies(self) -> Collection[str]:
        """The ``a2a-sdk`` requirement this instrumentor supports."""
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        tp = kwargs.get("tracer_provider")
        _EventSettings.enabled = bool(kwargs.get("emit_events", False))
        _EventSettings.logger_provider = kwargs.get("logger_provider")
        for cls in _client_classes():
            for attr, method in _CLIENT_METHODS.items():
                maker = _wrap_client_stream if attr in _CLIENT_STREAMING else _wrap_client
                self._patch(cls, attr, functools.partial(_make, maker, method, tp))
        for module, name, attrs in _HTTP_ENTRIES:
            try:
                cls = getattr(__import__(module, fromlist=[name]), name)
            except Exception:  # starlette (http-server extra) not installed
                continue
            for attr in attrs:
                self._patch(cls, attr, functools.partial(_make, _wrap_http_entry, attr, tp))
        try:
            from a2a.server.tasks.base_push_notification_sender import (
                BasePushNotificationSender,
            )

            self._patch(
                BasePushNotificationSender,
                "_dispatch_notification",
                functools.partial(_make, _wrap_push_dispatch, PUSH_METHOD, tp),
            )
        except Exception:
            _log.debug("a2a instrumentor: push sender unavailable", exc_info=True)
        for cls in _server_classes():
            for attr, method in _SERVER_METHODS.items():
                maker = _wrap_server_stream if attr in _SERVER_STREAMING else _wrap_server
                self._patch(cls, attr, functools.partial(_make, maker, method, tp))

    def _patch(self, cls: type, attr: str, make: Callable[[Any], Any]) -> None:
        original = cls.__dict__.get(attr)
        if original is None or getattr(original, _MARK, None) is not None:
            return
        try:
            setattr(cls, attr, make(original))
            self._patched.append((cls, attr, original))
        except Exception:
            _log.warning(
                "a2a instrumentor: could not wrap %s.%s", cls.__name__, attr, exc_info=True
            )

    def _uninstrument(self, **kwargs: Any) -> None:
        _EventSettings.enabled = False
        _EventSettings.logger_provider = None
        while self._patched:
            cls, attr, original = self._patched.pop()
            try:
                setattr(cls, attr, original)
            except Exception:
                _log.warning("a2a instrumentor: could not restore %s.%s", cls.__name__, attr)
