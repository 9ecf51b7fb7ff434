# SPDX-License-Identifier: Apache-2.0
"""Executors and helpers that carry the caller's context into worker threads.

Why (``../shared/reference/anchors.md`` gap 13): a span started in a worker thread whose task
was handed over by ``ThreadPoolExecutor.submit`` or ``loop.run_in_executor`` has no parent,
because neither copies :mod:`contextvars` into the worker (python-contrib#1009; haystack#9433
and #9717 fixed their own ``run_in_executor`` / ``ToolInvoker`` calls by hand). The tool and
model spans of such an agent become orphan root spans in other traces. ``asyncio.to_thread``
and asyncio tasks already copy the context (since 3.9 / 3.7) and need nothing.

Two layers, use whichever fits:

* ``opentelemetry-instrumentation-threading`` (contrib; one of ``opentelemetry-bootstrap``'s
  default instrumentations, loaded by ``opentelemetry-instrument`` when installed, or enabled
  with :func:`instrument_threading`) patches ``threading.Thread`` and
  ``ThreadPoolExecutor.submit`` process-wide so that the *OpenTelemetry* context follows the
  work: parents are kept. It carries nothing else: otel-agents' agent identity (the
  :func:`otel_agents.current_agent` context variable that puts ``gen_ai.agent.name`` on every
  span inside an agent) and other libraries' context variables stay behind.
* The helpers here copy the *whole* :mod:`contextvars` context, as ``asyncio.to_thread`` does,
  without patching anything: :class:`ContextExecutor` (a drop-in ``ThreadPoolExecutor``, also
  accepted by ``loop.set_default_executor`` so ``run_in_executor(None, ...)`` carries it),
  :func:`wrap_context` (any executor, ``threading.Thread`` targets, callbacks) and
  :func:`run_in_thread` (``asyncio.to_thread`` for a chosen executor).

Process pools are not covered on purpose: a ``contextvars.Context`` and the live ``Span`` in it
belong to this process (they cannot be pickled, and the child exports through its own
``TracerProvider``). Crossing a process is propagation, not context: inject a W3C
``traceparent`` into a dict carrier and extract it in the child. A :func:`wrap_context` callable
that is pickled (as ``ProcessPoolExecutor.submit`` does) therefore pickles as the bare function:
it runs in the child as it would without the wrapper instead of failing.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, ParamSpec, TypeVar

from opentelemetry import context as otel_context

from otel_agents._spans import rate_limited

__all__ = ["ContextExecutor", "instrument_threading", "run_in_thread", "wrap_context"]

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _run_in(
    ctx: contextvars.Context,
    otel_ctx: otel_context.Context | None,
    fn: Callable[..., _R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> _R:
    """Run ``fn`` inside ``ctx``; attach ``otel_ctx`` too when the runtime context is not ours.

    The default OpenTelemetry runtime context lives in a context variable, so ``ctx.run`` alone
    restores it and ``get_current()`` is the captured object (one identity check). A runtime
    context selected with ``OTEL_PYTHON_CONTEXT`` may keep it elsewhere: then it is attached for
    the call and detached after, so the worker thread is left as it was found.
    """
    return ctx.run(_attached_call, otel_ctx, fn, args, kwargs)


def _attached_call(
    otel_ctx: otel_context.Context | None,
    fn: Callable[..., _R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> _R:
    token: contextvars.Token[otel_context.Context] | None = None
    if otel_ctx is not None:
        try:
            if otel_context.get_current() is not otel_ctx:
                token = otel_context.attach(otel_ctx)
        except Exception:
            rate_limited.exception(logger, "context attach in worker")
    try:
        return fn(*args, **kwargs)  # the application's own exceptions propagate unchanged
    finally:
        if token is not None:
            otel_context.detach(token)  # logs, never raises, on a mismatched token


def _capture() -> tuple[contextvars.Context, otel_context.Context | None] | None:
    """The caller's contexts, or ``None`` when capturing failed (the call then runs bare)."""
    try:
        return contextvars.copy_context(), otel_context.get_current()
    except Exception:
        rate_limited.exception(logger, "context capture")
        return None


def _unwrapped(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Unpickling target of :class:`_ContextCall`: the bare function (see the module doc)."""
    return fn


class _ContextCall(Generic[_P, _R]):
    """``fn`` bound to the context captured when this object was made."""

    def __init__(
        self, fn: Callable[_P, _R], ctx: contextvars.Context, otel_ctx: otel_context.Context | None
    ) -> None:
        self._fn = fn
        self._ctx = ctx
        self._otel_ctx = otel_ctx
        functools.update_wrapper(self, fn)

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        # A Context can be entered by one thread at a time and not re-entered: each call runs in
        # its own copy, so one wrapped callable may run concurrently (executor.map, callbacks)
        # and a call's context changes stay inside that call.
        return _run_in(self._ctx.copy(), self._otel_ctx, self._fn, args, dict(kwargs))

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (_unwrapped, (self._fn,))

    def __repr__(self) -> str:
        return f"wrap_context({self._fn!r})"


def wrap_context(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Bind ``fn`` to the caller's current context (OpenTelemetry context and agent identity).

    The returned callable runs ``fn`` inside a copy of the :mod:`contextvars` context captured
    now, wherever and however often it is called: hand it to any executor, to
    ``threading.Thread(target=...)``, or register it as a callback. Spans it starts are children
    of the span current here, even when that span has ended by then, and carry the enclosing
    agent's ``gen_ai.agent.name``. Context changes made inside a call do not leak out of it.

    For ``async def`` functions nothing is needed: asyncio tasks copy the context themselves.

    Args:
        fn: the function to bind.

    Returns:
        A callable with ``fn``'s signature (and ``__name__``/``__doc__``); pickling it yields the
        bare ``fn`` (contexts do not cross processes). If capturing fails, ``fn`` itself.

    Example::

        with otel_agents.invoke_agent("researcher"):
            worker = threading.Thread(target=otel_agents.wrap_context(search), args=(q,))
            worker.start()
    """
    captured = _capture()
    if captured is None:
        return fn
    return _ContextCall(fn, *captured)


class ContextExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the context of the code that submitted them.

    ``submit`` (and therefore ``map``) captures the caller's :mod:`contextvars` context, the
    OpenTelemetry context and the agent identity included, and the worker thread runs the task
    inside it; the worker's own context is untouched afterwards, so nothing leaks from one task
    to the next. Same constructor as ``ThreadPoolExecutor``.

    Because it *is* a ``ThreadPoolExecutor``, ``loop.set_default_executor(ContextExecutor())``
    makes ``loop.run_in_executor(None, fn)`` carry the context too (the call frameworks use to
    run sync tools from async code, which does not copy it by itself).

    Example::

        with otel_agents.ContextExecutor(max_workers=4) as pool:
            with otel_agents.invoke_agent("planner"):
                results = list(pool.map(run_tool, calls))   # tool spans under "planner"
    """

    def submit(self, fn: Callable[..., _R], /, *args: Any, **kwargs: Any) -> Future[_R]:
        """Schedule ``fn(*args, **kwargs)`` to run in the caller's context.

        Args:
            fn: the callable to run in a worker thread.
            *args: its positional arguments.
            **kwargs: its keyword arguments.

        Returns:
            The ``Future`` of the call, as ``ThreadPoolExecutor.submit`` returns it.
        """
        captured = _capture()
        if captured is None:
            return super().submit(fn, *args, **kwargs)
        # The captured copy is used by exactly this task, so it is entered without another copy.
        return super().submit(_run_in, captured[0], captured[1], fn, args, kwargs)


async def run_in_thread(
    fn: Callable[..., _R], /, *args: Any, executor: ThreadPoolExecutor | None = None, **kwargs: Any
) -> _R:
    """``asyncio.to_thread`` for any thread executor: run ``fn`` off the loop in this context.

    ``loop.run_in_executor`` does not copy the context (``asyncio.to_thread`` does, but only on
    the loop's default executor); this does both: it runs ``fn(*args, **kwargs)`` on
    ``executor`` (default: the loop's default executor) inside a copy of the caller's context.

    Args:
        fn: the blocking callable.
        *args: its positional arguments.
        executor: the thread pool to run it on; ``None`` for the loop's default executor.
        **kwargs: its keyword arguments.

    Returns:
        What ``fn`` returns; its exceptions propagate unchanged.
    """
    loop = asyncio.get_running_loop()
    captured = _capture()
    if captured is None:
        return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))
    return await loop.run_in_executor(
        executor, functools.partial(_run_in, captured[0], captured[1], fn, args, kwargs)
    )


def instrument_threading() -> bool:
    """Enable ``opentelemetry-instrumentation-threading`` if it is installed.

    That instrumentation (contrib, maintained) patches ``threading.Thread``, ``threading.Timer``
    and ``ThreadPoolExecutor.submit`` process-wide so the OpenTelemetry context, and with it the
    parent span, follows work into threads nobody wrapped. ``opentelemetry-instrument`` already
    enables it when the package is installed; this is the same for programmatic set-ups. It does
    not carry the agent identity: spans in such threads keep their parent but not
    ``gen_ai.agent.name`` (the receiver fills that in from the parent); use
    :class:`ContextExecutor` / :func:`wrap_context` where the SDK's agent metrics need it.

    Returns:
        ``True`` when the instrumentation is active (now or already), ``False`` when the package
        is missing or enabling it failed (logged). Never raises.
    """
    try:
        from opentelemetry.instrumentation.threading import ThreadingInstrumentor
    except ImportError:
        return False
    try:
        instrumentor = ThreadingInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
        return bool(instrumentor.is_instrumented_by_opentelemetry)
    except Exception:
        rate_limited.exception(logger, "instrument_threading")
        return False
