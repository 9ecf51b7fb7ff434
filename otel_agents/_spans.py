# SPDX-License-Identifier: Apache-2.0
"""The spans API: GenAI agent, workflow, plan, tool and inference spans.

Every entry point returns a :class:`SpanScope`, which is at the same time

* a context manager (``with`` / ``async with``) that starts a span, makes it current and yields a
  handle (:class:`AgentSpan`, :class:`ToolSpan`, :class:`InferenceSpan`, ...), and
* a decorator for plain and ``async def`` functions (coroutines are awaited inside the span).

Span names, kinds and attributes follow the OpenTelemetry GenAI conventions
(``invoke_agent {gen_ai.agent.name}``, ``execute_tool {gen_ai.tool.name}``,
``{gen_ai.operation.name} {gen_ai.request.model}`` of kind CLIENT). Spans started inside an agent
carry that agent's ``gen_ai.agent.name`` / ``gen_ai.agent.id`` and ``gen_ai.conversation.id``;
the identity travels in a :class:`contextvars.ContextVar` (not baggage: it must not leave the
process, and the A2A layer decides what crosses agents).

Errors: the user's exception gets ``error.type`` (the exception class ``__qualname__``), span
status ERROR and an ``exception`` event, and then propagates unchanged. Failures of our own
bookkeeping are logged (rate-limited) and swallowed: telemetry never breaks the application.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from otel_agents import semconv as sc
from otel_agents._budget import check_budget
from otel_agents._content import capture_content_on_spans

__all__ = [
    "AgentIdentity",
    "AgentSpan",
    "InferenceSpan",
    "SpanHandle",
    "SpanScope",
    "ToolSpan",
    "chat",
    "current_agent",
    "embeddings",
    "execute_tool",
    "inference",
    "invoke_agent",
    "invoke_workflow",
    "plan",
    "record_decision",
    "text_completion",
    "tool_args_hash",
]

logger = logging.getLogger(__name__)

_INSTRUMENTATION_NAME: Final = "otel_agents"
_F = TypeVar("_F", bound=Callable[..., Any])
_H = TypeVar("_H", bound="SpanHandle")


# --------------------------------------------------------------------------------------------
# Rate-limited logging of our own failures
# --------------------------------------------------------------------------------------------
class _RateLimitedLog:
    """At most one traceback per ``interval`` seconds per call site; the rest are counted."""

    def __init__(self, interval: float = 60.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def exception(self, log: logging.Logger, where: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(where)
            if last is not None and now - last < self._interval:
                self._suppressed[where] = self._suppressed.get(where, 0) + 1
                return
            self._last[where] = now
            suppressed = self._suppressed.pop(where, 0)
        log.exception("otel_agents: %s failed (%d similar failures suppressed)", where, suppressed)


#: Shared by the SDK modules so that a broken hot path logs once a minute, not per span.
rate_limited = _RateLimitedLog()


# --------------------------------------------------------------------------------------------
# Agent identity (context)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AgentIdentity:
    """The agent a piece of work runs under.

    Attributes:
        name: ``gen_ai.agent.name``.
        id: ``gen_ai.agent.id``, if known.
        conversation_id: ``gen_ai.conversation.id``, if known.
    """

    name: str | None
    id: str | None = None
    conversation_id: str | None = None


_CURRENT_AGENT: contextvars.ContextVar[AgentIdentity | None] = contextvars.ContextVar(
    "otel_agents_current_agent", default=None
)


def current_agent() -> AgentIdentity | None:
    """The identity of the innermost enclosing :func:`invoke_agent` scope, or ``None``."""
    return _CURRENT_AGENT.get()


def _identity_attributes(
    agent: AgentIdentity | None, out: dict[str, AttributeValue]
) -> dict[str, AttributeValue]:
    if agent is not None:
        if agent.name is not None:
            out[sc.GEN_AI_AGENT_NAME] = agent.name
        if agent.id is not None:
            out[sc.GEN_AI_AGENT_ID] = agent.id
        if agent.conversation_id is not None:
            out[sc.GEN_AI_CONVERSATION_ID] = agent.conversation_id
    return out


# --------------------------------------------------------------------------------------------
# Tracers
# --------------------------------------------------------------------------------------------
def _version() -> str:
    try:
        from importlib.metadata import version

        return version("otel-agents")
    except Exception:
        return "0.0.0"


_VERSION: Final = _version()
# A ProxyTracer when no provider is set yet: it follows the global provider once one is set.
_GLOBAL_TRACER: Final = trace.get_tracer(_INSTRUMENTATION_NAME, _VERSION)
# Weak keys: a provider that is dropped (tests, short-lived set-ups) is not kept alive by us.
_TRACERS: weakref.WeakKeyDictionary[TracerProvider, Tracer] = weakref.WeakKeyDictionary()


def _tracer(provider: TracerProvider | None) -> Tracer:
    if provider is None:
        return _GLOBAL_TRACER
    try:
        return _TRACERS[provider]
    except (KeyError, TypeError):  # TypeError: a provider that cannot be weakly referenced
        tracer = provider.get_tracer(_INSTRUMENTATION_NAME, _VERSION)
        with contextlib.suppress(TypeError):
            _TRACERS[provider] = tracer
        return tracer


# --------------------------------------------------------------------------------------------
# Handles
# --------------------------------------------------------------------------------------------
def _json(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=repr, ensure_ascii=False, separators=(",", ":"))


def tool_args_hash(arguments: object) -> str:
    """A short, stable hash of tool-call arguments (``agent.tool.args_hash``).

    Arguments are canonicalised first (JSON with sorted keys; a JSON string is parsed so that
    ``'{"b":1,"a":2}'`` and ``{"a": 2, "b": 1}`` hash alike), so the receiver's tool-loop
    detector sees the same call as the same hash whatever produced it. Not content: 16 hex
    digits of BLAKE2b reveal nothing useful about the arguments.

    Args:
        arguments: a mapping, sequence, scalar, or a JSON string.

    Returns:
        16 lower-case hex digits.
    """
    if isinstance(arguments, (str, bytes)):
        with contextlib.suppress(ValueError):
            arguments = json.loads(arguments)
    try:
        canonical = json.dumps(
            arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
        )
    except (TypeError, ValueError):  # e.g. non-string dict keys of mixed types
        canonical = repr(arguments)
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class SpanHandle:
    """What a :class:`SpanScope` yields: the span plus GenAI-aware helpers.

    Attributes:
        span: the underlying OpenTelemetry span (non-recording when tracing is off).
    """

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute on the span."""
        self.span.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes on the span."""
        self.span.set_attributes(attributes)

    def add_event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """Add an event to the span."""
        self.span.add_event(name, attributes)

    def record_decision(
        self,
        decision_type: str,
        chosen: str,
        options: Sequence[str] | None = None,
        confidence: float | None = None,
        reasoning: str | None = None,
    ) -> None:
        """Record an ``agent.decision`` event on this span (see :func:`record_decision`)."""
        record_decision(decision_type, chosen, options, confidence, reasoning, span=self.span)


class AgentSpan(SpanHandle):
    """Handle of an ``invoke_agent`` / ``invoke_workflow`` / ``plan`` span."""

    __slots__ = ()


class ToolSpan(SpanHandle):
    """Handle of an ``execute_tool`` span."""

    __slots__ = ()

    def set_arguments(self, arguments: object) -> None:
        """Record the call arguments: always their hash, the arguments only when content is on."""
        try:
            self.span.set_attribute(sc.AGENT_TOOL_ARGS_HASH, tool_args_hash(arguments))
            if capture_content_on_spans():
                self.span.set_attribute(sc.GEN_AI_TOOL_CALL_ARGUMENTS, _json(arguments))
        except Exception:
            rate_limited.exception(logger, "ToolSpan.set_arguments")

    def set_result(self, result: object) -> None:
        """Record the tool result (``gen_ai.tool.call.result``) when content capture is on."""
        try:
            if capture_content_on_spans():
                self.span.set_attribute(sc.GEN_AI_TOOL_CALL_RESULT, _json(result))
        except Exception:
            rate_limited.exception(logger, "ToolSpan.set_result")


class InferenceSpan(SpanHandle):
    """Handle of an inference (``chat`` / ``text_completion`` / ``embeddings``) span."""

    __slots__ = ()

    def record_usage(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_creation_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> None:
        """Record token usage (GenAI semantics: input includes cached, output includes reasoning).

        The enriching processor prices these when the span ends.
        """
        pairs = (
            (sc.GEN_AI_USAGE_INPUT_TOKENS, input_tokens),
            (sc.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens),
            (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, cache_read_tokens),
            (sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, cache_creation_tokens),
            (sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, reasoning_tokens),
        )
        for key, value in pairs:
            if value is not None:
                self.span.set_attribute(key, value)

    def record_cost(self, amount: float, currency: str = "USD") -> None:
        """Record a cost the provider reported (``gen_ai.usage.cost.source = provider``).

        The enriching processor keeps a reported cost instead of pricing the tokens.
        """
        try:
            self.span.set_attributes(
                {
                    sc.GEN_AI_USAGE_COST_AMOUNT: float(amount),
                    sc.GEN_AI_USAGE_COST_CURRENCY: currency,
                    sc.GEN_AI_USAGE_COST_SOURCE: sc.COST_SOURCE_PROVIDER,
                }
            )
        except (TypeError, ValueError):
            logger.warning("otel_agents: record_cost needs a number, got %r; ignored", amount)

    def set_response_model(self, model: str) -> None:
        """Set ``gen_ai.response.model`` (the exact model that answered; used for pricing)."""
        self.span.set_attribute(sc.GEN_AI_RESPONSE_MODEL, model)

    def set_response_id(self, response_id: str) -> None:
        """Set ``gen_ai.response.id``."""
        self.span.set_attribute(sc.GEN_AI_RESPONSE_ID, response_id)

    def set_finish_reasons(self, reasons: Sequence[str]) -> None:
        """Set ``gen_ai.response.finish_reasons``."""
        self.span.set_attribute(sc.GEN_AI_RESPONSE_FINISH_REASONS, list(reasons))

    def set_input_messages(self, messages: object) -> None:
        """Record ``gen_ai.input.messages`` (JSON) when content capture is on."""
        self._content(sc.GEN_AI_INPUT_MESSAGES, messages)

    def set_output_messages(self, messages: object) -> None:
        """Record ``gen_ai.output.messages`` (JSON) when content capture is on."""
        self._content(sc.GEN_AI_OUTPUT_MESSAGES, messages)

    def _content(self, key: str, value: object) -> None:
        try:
            if capture_content_on_spans():
                self.span.set_attribute(key, _json(value))
        except Exception:
            rate_limited.exception(logger, f"InferenceSpan.{key}")


# --------------------------------------------------------------------------------------------
# Scopes (context manager + decorator)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Active:
    span: Span
    context_token: object | None
    agent_token: contextvars.Token[AgentIdentity | None] | None
    scope_token: contextvars.Token[_Active | None] | None = None


class SpanScope(Generic[_H]):
    """A GenAI span to start: use it as ``with``/``async with`` block or as a decorator.

    Instances are templates: each ``with`` or decorated call starts a new span. Build them with
    :func:`invoke_agent`, :func:`invoke_workflow`, :func:`plan`, :func:`execute_tool` or
    :func:`inference`.
    """

    __slots__ = (
        "_active",
        "_agent",
        "_attributes",
        "_handle_type",
        "_kind",
        "_name",
        "_provider",
        "_tool_arguments",
    )

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        handle_type: type[_H],
        *,
        agent: AgentIdentity | None = None,
        tool_arguments: object = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._handle_type = handle_type
        self._agent = agent  # set only by invoke_agent: the identity this scope establishes
        self._tool_arguments = tool_arguments
        self._provider = tracer_provider
        # The span a `with` block opened, per context: one template used concurrently from
        # several threads or asyncio tasks (or recursively) keeps each block's span apart.
        self._active: contextvars.ContextVar[_Active | None] = contextvars.ContextVar(
            "otel_agents_scope", default=None
        )

    # -- span life cycle -------------------------------------------------------------------
    def _span_name(self) -> str:
        return self._name

    def _start(self) -> tuple[_H, _Active | None]:
        try:
            enclosing = _CURRENT_AGENT.get()
            attributes: dict[str, AttributeValue] = {}
            agent: AgentIdentity | None = self._agent
            if agent is not None:
                if agent.conversation_id is None and enclosing is not None:
                    agent = dataclasses.replace(agent, conversation_id=enclosing.conversation_id)
                _identity_attributes(agent, attributes)
                if enclosing is not None and enclosing.name is not None:
                    attributes[sc.AGENT_PARENT_NAME] = enclosing.name
            else:
                agent = enclosing
                _identity_attributes(enclosing, attributes)
            attributes.update(self._attributes)  # explicit attributes win over inherited ones
            span = _tracer(self._provider).start_span(
                self._span_name(),
                kind=self._kind,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
            context_token = otel_context.attach(trace.set_span_in_context(span))
            agent_token = _CURRENT_AGENT.set(agent) if self._agent is not None else None
            active = _Active(span, context_token, agent_token)
            handle = self._handle_type(span)
            if self._tool_arguments is not None and isinstance(handle, ToolSpan):
                handle.set_arguments(self._tool_arguments)
            return handle, active
        except Exception:
            rate_limited.exception(logger, f"starting span {self._name!r}")
            return self._handle_type(trace.INVALID_SPAN), None

    @staticmethod
    def _finish(active: _Active | None, exc: BaseException | None) -> None:
        if active is None:
            return
        span = active.span
        try:
            if exc is not None and not isinstance(exc, GeneratorExit):
                span.set_attribute(sc.ERROR_TYPE, type(exc).__qualname__)
                span.record_exception(exc, escaped=True)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))
        except Exception:
            rate_limited.exception(logger, "recording an exception on a span")
        try:
            span.end()
        except Exception:
            rate_limited.exception(logger, "ending a span")
        try:
            if active.agent_token is not None:
                _CURRENT_AGENT.reset(active.agent_token)
            if active.context_token is not None:
                otel_context.detach(active.context_token)  # type: ignore[arg-type]
        except Exception:
            # Exiting in another context than the one entered (misuse across tasks/threads).
            rate_limited.exception(logger, "restoring the context after a span")

    def _admit(self) -> None:
        """Runs before a span starts; may refuse the operation (only on purpose, see
        :class:`_InferenceScope`). The default admits everything."""

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> _H:
        self._admit()
        handle, active = self._start()
        if active is None:
            active = _Active(handle.span, None, None)
        try:
            active.scope_token = self._active.set(active)
        except Exception:
            rate_limited.exception(logger, "entering a span scope")
        return handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            active = self._active.get()
            if active is None:
                return
            if active.scope_token is not None:
                self._active.reset(active.scope_token)
        except Exception:
            # Exited in another context than entered (misuse): nothing safe to end.
            rate_limited.exception(logger, "leaving a span scope")
            return
        self._finish(active if active.context_token is not None else None, exc)

    async def __aenter__(self) -> _H:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator -------------------------------------------------------------------------
    def __call__(self, func: _F) -> _F:
        """Decorate ``func`` so that every call runs inside a new span from this template.

        ``async def`` functions are awaited inside the span. Generator functions are refused
        (a span cannot stay current across ``yield`` without leaking into the consumer).

        Raises:
            TypeError: ``func`` is a generator or async generator function.
        """
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"otel_agents cannot decorate generator function {func.__qualname__}; "
                "use a `with` block inside it instead"
            )
        is_tool = issubclass(self._handle_type, ToolSpan)
        signature = _signature(func) if is_tool and self._tool_arguments is None else None

        if inspect.iscoroutinefunction(func):
            async_func = cast(Callable[..., Awaitable[Any]], func)

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                self._admit()
                handle, active = self._start()
                if signature is not None:
                    _record_call_arguments(handle, signature, args, kwargs)
                try:
                    result = await async_func(*args, **kwargs)
                except BaseException as exc:
                    self._finish(active, exc)
                    raise
                if is_tool:
                    cast(ToolSpan, handle).set_result(result)
                self._finish(active, None)
                return result

            return cast(_F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._admit()
            handle, active = self._start()
            if signature is not None:
                _record_call_arguments(handle, signature, args, kwargs)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                self._finish(active, exc)
                raise
            if is_tool:
                cast(ToolSpan, handle).set_result(result)
            self._finish(active, None)
            return result

        return cast(_F, wrapper)


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def _record_call_arguments(
    handle: SpanHandle, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    try:
        bound = signature.bind_partial(*args, **kwargs)
        bound.apply_defaults()  # add(1) and add(1, b=0) are the same call: same hash
        arguments = {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}
        cast(ToolSpan, handle).set_arguments(arguments)
    except Exception:
        rate_limited.exception(logger, "recording tool arguments")


def _merge(
    base: dict[str, AttributeValue], extra: Mapping[str, AttributeValue] | None
) -> dict[str, AttributeValue]:
    if extra:
        base.update(extra)
    return base


# --------------------------------------------------------------------------------------------
# Public constructors
# --------------------------------------------------------------------------------------------
def invoke_agent(
    name: str,
    agent_id: str | None = None,
    description: str | None = None,
    conversation_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    tracer_provider: TracerProvider | None = None,
) -> SpanScope[AgentSpan]:
    """An ``invoke_agent {name}`` span; work inside it carries this agent's identity.

    Args:
        name: ``gen_ai.agent.name`` (low cardinality).
        agent_id: ``gen_ai.agent.id``.
        description: ``gen_ai.agent.description``.
        conversation_id: ``gen_ai.conversation.id``; inherited from an enclosing agent if unset.
        attributes: extra span attributes (win over the ones set here).
        kind: INTERNAL for an in-process agent (default), CLIENT for a remote one.
        tracer_provider: defaults to the global tracer provider.

    Example::

        with invoke_agent("planner", conversation_id=session) as agent:
            ...

        @invoke_agent("researcher")
        async def research(question: str) -> str: ...
    """
    base: dict[str, AttributeValue] = {sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT}
    if description is not None:
        base[sc.GEN_AI_AGENT_DESCRIPTION] = description
    return SpanScope(
        f"{sc.OP_INVOKE_AGENT} {name}" if name else sc.OP_INVOKE_AGENT,
        kind,
        _merge(base, attributes),
        AgentSpan,
        agent=AgentIdentity(name, agent_id, conversation_id),
        tracer_provider=tracer_provider,
    )


def invoke_workflow(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> SpanScope[AgentSpan]:
    """An ``invoke_workflow {name}`` span (INTERNAL) with ``gen_ai.workflow.name``.

    Args:
        name: ``gen_ai.workflow.name`` (low cardinality, e.g. the crew or graph name).
        attributes: extra span attributes.
        tracer_provider: defaults to the global tracer provider.
    """
    base: dict[str, AttributeValue] = {
        sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_WORKFLOW,
        sc.GEN_AI_WORKFLOW_NAME: name,
    }
    return SpanScope(
        f"{sc.OP_INVOKE_WORKFLOW} {name}" if name else sc.OP_INVOKE_WORKFLOW,
        SpanKind.INTERNAL,
        _merge(base, attributes),
        AgentSpan,
        tracer_provider=tracer_provider,
    )


class _InferenceScope(SpanScope[InferenceSpan]):
    """Inference spans consult the budget guard before the LLM call starts."""

    __slots__ = ()

    def _admit(self) -> None:
        # BudgetExceededError is raised on purpose (a policy the user opted into); check_budget
        # swallows every other failure, so nothing else can reach the application from here.
        agent = _CURRENT_AGENT.get()
        check_budget(agent.name if agent is not None else None)


class _PlanScope(SpanScope[AgentSpan]):
    """``plan`` names its span after the agent current when the span *starts*."""

    __slots__ = ("_explicit_agent",)

    def __init__(
        self,
        agent_name: str | None,
        attributes: dict[str, AttributeValue],
        tracer_provider: TracerProvider | None,
    ) -> None:
        if agent_name is not None:
            attributes.setdefault(sc.GEN_AI_AGENT_NAME, agent_name)
        super().__init__(
            sc.OP_PLAN, SpanKind.INTERNAL, attributes, AgentSpan, tracer_provider=tracer_provider
        )
        self._explicit_agent = agent_name

    def _span_name(self) -> str:
        name = self._explicit_agent
        if name is None:
            enclosing = _CURRENT_AGENT.get()
            name = enclosing.name if enclosing is not None else None
        return f"{sc.OP_PLAN} {name}" if name else sc.OP_PLAN


def plan(
    agent_name: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> SpanScope[AgentSpan]:
    """A ``plan {agent}`` span: the phase where an agent formulates its strategy.

    The LLM call producing the plan belongs inside it; the tool/task spans that carry the plan
    out are its siblings under ``invoke_agent``.

    Args:
        agent_name: defaults to the enclosing agent's name.
        attributes: extra span attributes.
        tracer_provider: defaults to the global tracer provider.
    """
    base: dict[str, AttributeValue] = {sc.GEN_AI_OPERATION_NAME: sc.OP_PLAN}
    return _PlanScope(agent_name, _merge(base, attributes), tracer_provider)


def execute_tool(
    name: str,
    call_id: str | None = None,
    tool_type: str | None = "function",
    arguments: object = None,
    description: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> SpanScope[ToolSpan]:
    """An ``execute_tool {name}`` span (INTERNAL).

    ``agent.tool.args_hash`` is always set when arguments are known (it is not content);
    ``gen_ai.tool.call.arguments`` / ``.result`` only when content capture is on. As a
    decorator, the call's bound arguments and return value are recorded the same way.

    Args:
        name: ``gen_ai.tool.name``.
        call_id: ``gen_ai.tool.call.id`` (the model's tool-call id).
        tool_type: ``gen_ai.tool.type``: ``function``, ``extension`` or ``datastore``.
        arguments: the call arguments (mapping or JSON string).
        description: ``gen_ai.tool.description``.
        attributes: extra span attributes.
        tracer_provider: defaults to the global tracer provider.
    """
    base: dict[str, AttributeValue] = {
        sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
        sc.GEN_AI_TOOL_NAME: name,
    }
    if call_id is not None:
        base[sc.GEN_AI_TOOL_CALL_ID] = call_id
    if tool_type is not None:
        base[sc.GEN_AI_TOOL_TYPE] = tool_type
    if description is not None:
        base[sc.GEN_AI_TOOL_DESCRIPTION] = description
    return SpanScope(
        f"{sc.OP_EXECUTE_TOOL} {name}",
        SpanKind.INTERNAL,
        _merge(base, attributes),
        ToolSpan,
        tool_arguments=arguments,
        tracer_provider=tracer_provider,
    )


def inference(
    model: str,
    provider: str | None = None,
    operation: str = sc.OP_CHAT,
    *,
    server_address: str | None = None,
    server_port: int | None = None,
    conversation_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> SpanScope[InferenceSpan]:
    """A model-inference span ``{operation} {model}`` of kind CLIENT.

    Args:
        model: ``gen_ai.request.model``.
        provider: ``gen_ai.provider.name`` (``openai``, ``anthropic``, ``aws.bedrock``, ...).
        operation: ``chat``, ``text_completion``, ``generate_content`` or ``embeddings``.
        server_address: ``server.address``.
        server_port: ``server.port``.
        conversation_id: ``gen_ai.conversation.id`` (default: the enclosing agent's).
        attributes: extra span attributes (request parameters and the like).
        tracer_provider: defaults to the global tracer provider.
    """
    base: dict[str, AttributeValue] = {
        sc.GEN_AI_OPERATION_NAME: operation,
        sc.GEN_AI_REQUEST_MODEL: model,
    }
    if provider is not None:
        base[sc.GEN_AI_PROVIDER_NAME] = provider
    if server_address is not None:
        base[sc.SERVER_ADDRESS] = server_address
    if server_port is not None:
        base[sc.SERVER_PORT] = server_port
    if conversation_id is not None:
        base[sc.GEN_AI_CONVERSATION_ID] = conversation_id
    return _InferenceScope(
        f"{operation} {model}" if model else operation,
        SpanKind.CLIENT,
        _merge(base, attributes),
        InferenceSpan,
        tracer_provider=tracer_provider,
    )


def chat(model: str, provider: str | None = None, **kwargs: Any) -> SpanScope[InferenceSpan]:
    """:func:`inference` with ``operation="chat"``."""
    return inference(model, provider, sc.OP_CHAT, **kwargs)


def text_completion(
    model: str, provider: str | None = None, **kwargs: Any
) -> SpanScope[InferenceSpan]:
    """:func:`inference` with ``operation="text_completion"``."""
    return inference(model, provider, sc.OP_TEXT_COMPLETION, **kwargs)


def embeddings(model: str, provider: str | None = None, **kwargs: Any) -> SpanScope[InferenceSpan]:
    """:func:`inference` with ``operation="embeddings"``."""
    return inference(model, provider, sc.OP_EMBEDDINGS, **kwargs)


def record_decision(
    decision_type: str,
    chosen: str,
    options: Sequence[str] | None = None,
    confidence: float | None = None,
    reasoning: str | None = None,
    *,
    span: Span | None = None,
) -> None:
    """Add an ``agent.decision`` event to the current span (or ``span``).

    Args:
        decision_type: ``agent.decision.type`` (``route``, ``tool_choice``, ``handoff``, ...).
        chosen: ``agent.decision.chosen``.
        options: ``agent.decision.options``, the alternatives considered.
        confidence: ``agent.decision.confidence`` in [0, 1]; an out-of-range or non-finite
            value is dropped with a warning (telemetry does not raise into the application).
        reasoning: ``agent.decision.reasoning``; recorded only when content capture is on.
        span: the span to annotate; default: the current span.
    """
    try:
        target = span if span is not None else trace.get_current_span()
        if not target.is_recording():
            return
        attributes: dict[str, AttributeValue] = {
            sc.AGENT_DECISION_TYPE: decision_type,
            sc.AGENT_DECISION_CHOSEN: chosen,
        }
        if options is not None:
            attributes[sc.AGENT_DECISION_OPTIONS] = [str(o) for o in options]
        if confidence is not None:
            value = float(confidence)
            if math.isfinite(value) and 0.0 <= value <= 1.0:
                attributes[sc.AGENT_DECISION_CONFIDENCE] = value
            else:
                logger.warning(
                    "otel_agents: agent.decision.confidence must be within [0, 1], got %r; dropped",
                    confidence,
                )
        if reasoning is not None and capture_content_on_spans():
            attributes[sc.AGENT_DECISION_REASONING] = reasoning
        target.add_event(sc.EVENT_AGENT_DECISION, attributes)
    except Exception:
        rate_limited.exception(logger, "record_decision")
