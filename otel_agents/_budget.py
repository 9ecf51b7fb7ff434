# SPDX-License-Identifier: Apache-2.0
"""Budget guard: watch cost / token totals per agent and act when a budget is exceeded.

Three sources feed a :class:`BudgetGuard` (use one per guard, not several: the totals would
add up twice):

* :meth:`BudgetGuard.feed_from` an ``AgentMetricsProcessor`` (``Configured.metrics_processor``):
  one sum per agent per batch of spans the enrichment worker delivers — no per-span cost on the
  application thread, no metric reader, enforcement lags by the worker's delivery delay;
* as a :class:`~opentelemetry.sdk.trace.SpanProcessor` (``tracer_provider.add_span_processor``)
  it adds the cost (``gen_ai.usage.cost.amount``, USD) and tokens of every finished inference
  span — exact and immediate; or
* :class:`BudgetMetricReader`, a :class:`~opentelemetry.sdk.metrics.export.MetricReader` on the
  meter provider, sets the totals from the cumulative ``agent.cost`` counter and
  ``gen_ai.client.token.usage`` sums whenever it collects (``check_budget`` collects at most every
  ``refresh_interval`` seconds) — for apps whose cost arrives as metrics.

Policies when a budget is first exceeded: ``"warn"`` logs a warning, ``"callback"`` calls the
given function with a :class:`BudgetStatus`, ``"refuse"`` (opt-in) makes every later
:func:`check_budget` for that agent raise :class:`~otel_agents.BudgetExceededError`.  Every
policy also emits an ``agent.budget.exceeded`` event log record.

``check_budget(agent_name)`` is the hook for the spans API's ``inference()`` entry (before it
starts an LLM span) and for applications that call models without it; its raise is the one
deliberate exception this package sends into application code, and only for budgets whose
policy is ``"refuse"``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricReader,
    MetricsData,
    NumberDataPoint,
)
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint as _HistogramDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otel_agents import semconv as sc
from otel_agents._errors import BudgetExceededError
from otel_agents._metrics import _ForkSafe, _int, _normalizer, span_cost

__all__ = [
    "ALL_AGENTS",
    "EACH_AGENT",
    "Budget",
    "BudgetGuard",
    "BudgetMetricReader",
    "BudgetStatus",
    "check_budget",
    "install_budget_guard",
    "register_guard",
    "unregister_guard",
]

_log = logging.getLogger(__name__)

#: ``Budget.agent`` value: one budget over the sum of all agents.
ALL_AGENTS: str | None = None
#: ``Budget.agent`` value: the limit applies to each agent separately.
EACH_AGENT = "*"

Policy = Literal["warn", "callback", "refuse"]
Kind = Literal["cost", "tokens"]


@dataclasses.dataclass(frozen=True)
class BudgetStatus:
    """A budget that was exceeded (passed to callbacks, carried by the error)."""

    name: str
    kind: Kind
    agent: str | None
    limit: float
    spent: float


@dataclasses.dataclass(frozen=True)
class Budget:
    """One budget.

    Attributes:
        limit: maximum cost in USD (``kind="cost"``) or tokens (``kind="tokens"``, input+output).
        kind: what is counted.
        agent: an agent name, ``ALL_AGENTS`` (None: the sum of all agents) or ``EACH_AGENT``.
        policy: ``"warn"``, ``"callback"`` or ``"refuse"``.
        callback: called once per crossing with a :class:`BudgetStatus` (policy "callback").
        name: label for logs and events; default ``"{kind}:{agent}"``.
    """

    limit: float
    kind: Kind = "cost"
    agent: str | None = ALL_AGENTS
    policy: Policy = "warn"
    callback: Callable[[BudgetStatus], None] | None = None
    name: str | None = None

    def label(self) -> str:
        """The budget's name for logs and events."""
        return self.name or f"{self.kind}:{self.agent or 'all'}"


_TOTAL = ""  # key of the all-agents total inside the per-agent maps


class BudgetGuard(SpanProcessor, _ForkSafe):
    """Keeps cost / token totals per agent and applies the budgets' policies.

    Example::

        guard = BudgetGuard([Budget(5.0, agent="researcher", policy="refuse")])
        tracer_provider.add_span_processor(guard)   # install() does this and registers it

    Args:
        budgets: the budgets to enforce.
        pricebook: optional ``PriceBook`` for inference spans that arrive unpriced.
        logger_provider: where ``agent.budget.exceeded`` records go; the global one when None.
    """

    def __init__(
        self, budgets: Iterable[Budget], *, pricebook: Any = None, logger_provider: Any = None
    ) -> None:
        self.budgets = list(budgets)
        self._refusing = any(b.policy == "refuse" for b in self.budgets)
        for b in self.budgets:
            if b.policy == "callback" and b.callback is None:
                raise ValueError(f"budget {b.label()}: policy 'callback' needs a callback")
            if b.limit < 0:
                raise ValueError(f"budget {b.label()}: limit must not be negative")
        _ForkSafe.__init__(self)
        self._lock = threading.Lock()
        self._cost: dict[str, float] = {}
        self._tokens: dict[str, float] = {}
        # (budget index, agent key) already exceeded: act once per crossing, refuse until reset
        self._exceeded: dict[tuple[int, str], BudgetStatus] = {}
        self._pricebook = pricebook
        self._normalize = _normalizer()
        self._has_dialect = _dialect_check()
        self._queue: Any = None  # otel_agents._processors._Delivery, created on first use
        self._reader: BudgetMetricReader | None = None
        self._logger_provider = logger_provider

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    # -- feeding ------------------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing: cost and tokens are known when the span ends."""

    def on_end(self, span: ReadableSpan) -> None:
        """Adds an inference span's cost and tokens; never raises.

        Hot path (application thread): one C-level copy of the attributes and a lookup for
        spans that are not inference. Without a ``refuse`` budget, a span that must be
        normalized or priced here (``pricebook`` given, no ``gen_ai.usage.cost.amount`` on it) is
        queued and accounted on a worker thread; :meth:`spent` accounts everything queued first.
        With a ``refuse`` budget it is accounted at once (every :meth:`check` would have to
        settle the queue before the next LLM call anyway), so refusal sees every span that ended
        before the check.
        """
        try:
            attrs: Mapping[str, Any] = _plain(span)
            dialect = self._has_dialect(attrs)
            if not dialect and attrs.get(sc.GEN_AI_OPERATION_NAME) not in sc.INFERENCE_OPERATIONS:
                return
            if self._refusing:
                # check() would settle the queue before the next LLM call anyway: account
                # here and spare the queue round trip.
                self._account(attrs)
                return
            if dialect or (
                self._pricebook is not None and sc.GEN_AI_USAGE_COST_AMOUNT not in attrs
            ):
                self._pending().put(attrs)  # normalized / priced off-thread
                return
            self._account(attrs)
        except Exception:
            _log.debug("budget guard: on_end failed", exc_info=True)

    def _account(self, attrs: Mapping[str, Any]) -> None:
        if self._has_dialect(attrs):
            attrs = self._normalize(attrs)
            if attrs.get(sc.GEN_AI_OPERATION_NAME) not in sc.INFERENCE_OPERATIONS:
                return
        agent = attrs.get(sc.GEN_AI_AGENT_NAME)
        agent = agent if isinstance(agent, str) else None
        amount, _ = span_cost(attrs, self._pricebook)
        tokens = (_int(attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS)) or 0) + (
            _int(attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS)) or 0
        )
        self.add(agent, cost=amount or 0.0, tokens=tokens)

    def _account_batch(self, batch: list[Mapping[str, Any]]) -> None:
        for attrs in batch:
            try:
                self._account(attrs)
            except Exception:
                _log.debug("budget guard: accounting failed", exc_info=True)

    def _pending(self) -> Any:
        if self._queue is None:
            from otel_agents._processors import _Delivery

            self._queue = _Delivery(self._account_batch, "BudgetGuard")
        return self._queue

    def _settle(self) -> None:
        """Account the spans still queued for pricing (on the calling thread)."""
        if self._queue is not None:
            self._queue.flush()

    def add(self, agent: str | None, *, cost: float = 0.0, tokens: float = 0.0) -> None:
        """Adds spending for ``agent`` and evaluates the budgets."""
        with self._lock:
            for table, value in ((self._cost, cost), (self._tokens, tokens)):
                if value:
                    table[_TOTAL] = table.get(_TOTAL, 0.0) + value
                    if agent:
                        table[agent] = table.get(agent, 0.0) + value
        self._evaluate(agent)

    def feed_from(self, metrics_processor: Any) -> BudgetGuard:
        """Feeds this guard from an ``AgentMetricsProcessor``'s per-batch spending; returns it.

        The processor behind the enriching processor already reads every inference span's
        (normalized, priced) cost and tokens on the enrichment worker; it hands this guard one
        sum per agent per delivered batch, so the guard costs nothing per span and needs no
        metric reader of its own. Enforcement lags spending by the worker's delivery delay
        (at most ~100 ms, or a flush), less than :class:`BudgetMetricReader`'s refresh interval;
        use :func:`install_budget_guard` (span-fed) where a ``refuse`` budget must see the very
        last span. Do not also add this guard as a span processor or give it a reader.

        Args:
            metrics_processor: the ``AgentMetricsProcessor`` (``Configured.metrics_processor``).
        """
        metrics_processor.add_spend_listener(self.add_batch)
        return self

    def add_batch(
        self, cost: Mapping[str | None, float], tokens: Mapping[str | None, float]
    ) -> None:
        """Adds one batch's spending per agent (None: no agent) and evaluates the budgets once."""
        with self._lock:
            for table, values in ((self._cost, cost), (self._tokens, tokens)):
                for agent, value in values.items():
                    if value:
                        table[_TOTAL] = table.get(_TOTAL, 0.0) + value
                        if agent:
                            table[agent] = table.get(agent, 0.0) + value
        for agent in {*cost, *tokens}:
            self._evaluate(agent)

    def set_totals(self, cost: dict[str, float], tokens: dict[str, float]) -> None:
        """Replaces the totals (per agent; key ``""`` is all agents) and evaluates every budget."""
        with self._lock:
            self._cost = dict(cost)
            self._tokens = dict(tokens)
            agents: set[str | None] = {a for a in (*cost, *tokens) if a}
        for agent in agents or {None}:
            self._evaluate(agent)

    def spent(self, agent: str | None = None, kind: Kind = "cost") -> float:
        """Current total of ``kind`` for ``agent`` (None: all agents)."""
        self._settle()
        with self._lock:
            table = self._cost if kind == "cost" else self._tokens
            return table.get(agent or _TOTAL, 0.0)

    def reset(self) -> None:
        """Forgets totals and exceeded states (e.g. at the start of a billing period)."""
        with self._lock:
            self._cost.clear()
            self._tokens.clear()
            self._exceeded.clear()

    # -- evaluating ---------------------------------------------------------------------------
    def _applies(self, budget: Budget, agent: str | None) -> str | None:
        """Key of the total ``budget`` watches for a change by ``agent``, or None."""
        if budget.agent is ALL_AGENTS:
            return _TOTAL
        if budget.agent == EACH_AGENT:
            return agent or None
        return budget.agent if budget.agent == agent else None

    def _evaluate(self, agent: str | None) -> None:
        fired: list[tuple[Budget, BudgetStatus]] = []
        with self._lock:
            for i, budget in enumerate(self.budgets):
                key = self._applies(budget, agent)
                if key is None or (i, key) in self._exceeded:
                    continue
                table = self._cost if budget.kind == "cost" else self._tokens
                spent = table.get(key, 0.0)
                if spent > budget.limit:
                    status = BudgetStatus(
                        budget.label(), budget.kind, key or None, budget.limit, spent
                    )
                    self._exceeded[(i, key)] = status
                    fired.append((budget, status))
        for budget, status in fired:
            self._act(budget, status)

    def _act(self, budget: Budget, status: BudgetStatus) -> None:
        try:
            from otel_agents._events import emit_agent_event

            emit_agent_event(
                sc.EVENT_AGENT_BUDGET_EXCEEDED,
                {
                    sc.AGENT_BUDGET_NAME: status.name,
                    sc.AGENT_BUDGET_KIND: status.kind,
                    sc.AGENT_BUDGET_LIMIT: status.limit,
                    sc.AGENT_BUDGET_SPENT: status.spent,
                    sc.GEN_AI_AGENT_NAME: status.agent,
                },
                severity=SeverityNumber.WARN,
                logger_provider=self._logger_provider,
            )
        except Exception:
            _log.debug("budget event failed", exc_info=True)
        if budget.policy == "warn" or budget.policy == "refuse":
            _log.warning(
                "otel-agents budget %s exceeded: %s %.6g > limit %.6g%s",
                status.name,
                status.kind,
                status.spent,
                status.limit,
                " (next LLM calls refused)" if budget.policy == "refuse" else "",
            )
        if budget.policy == "callback" and budget.callback is not None:
            try:
                budget.callback(status)
            except Exception:
                _log.warning("otel-agents budget callback failed", exc_info=True)

    def check(self, agent_name: str | None = None) -> None:
        """Raises BudgetExceededError if a ``refuse`` budget covering ``agent_name`` is exceeded."""
        if self._refusing:
            self._settle()
        if self._reader is not None:
            self._reader.refresh()
        if not self._refusing or not self._exceeded:
            return  # the usual case, without the lock: nothing can refuse
        with self._lock:
            for i, budget in enumerate(self.budgets):
                if budget.policy != "refuse":
                    continue
                key = self._applies(budget, agent_name)
                if key is None:
                    continue
                status = self._exceeded.get((i, key))
                if status is not None:
                    raise BudgetExceededError(
                        f"budget {status.name} exceeded: {status.kind} {status.spent:.6g} > "
                        f"{status.limit:.6g}"
                        + (f" for agent {status.agent!r}" if status.agent else "")
                    )

    def shutdown(self) -> None:
        """Account what is queued and stop the pricing worker."""
        if self._queue is not None:
            self._queue.stop()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Account what is queued; always True."""
        self._settle()
        return True


def _plain(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes as a plain dict (a C-level copy; see ``_processors``)."""
    attrs = span.attributes
    if attrs is None:
        return {}
    try:
        plain = attrs.copy()  # type: ignore[attr-defined]
    except AttributeError:
        return dict(attrs)
    return plain if type(plain) is dict else dict(plain)


def _dialect_check() -> Callable[[Mapping[str, Any]], bool]:
    try:
        from otel_agents._normalize import has_dialect_keys
    except Exception:
        return lambda attrs: False
    return has_dialect_keys


class BudgetMetricReader(MetricReader):
    """Feeds a :class:`BudgetGuard` from the collected ``agent.cost`` / token metrics.

    Register it on the meter provider (``MeterProvider(metric_readers=[reader])``); it asks for
    cumulative temporality so each collection carries running totals.  ``check_budget`` collects
    at most every ``refresh_interval`` seconds, so enforcement lags spending by at most that.

    Args:
        guard: the guard to feed (do not also add it as a span processor).
        refresh_interval: minimum seconds between collections triggered by checks.
    """

    def __init__(self, guard: BudgetGuard, *, refresh_interval: float = 1.0) -> None:
        from opentelemetry.sdk.metrics import Counter, Histogram

        super().__init__(
            preferred_temporality={
                Counter: AggregationTemporality.CUMULATIVE,
                Histogram: AggregationTemporality.CUMULATIVE,
            }
        )
        self._guard = guard
        guard._reader = self
        self._interval = refresh_interval
        self._last = 0.0
        self._refresh_lock = threading.Lock()

    def refresh(self) -> None:
        """Collects now unless a collection happened within ``refresh_interval``."""
        now = time.monotonic()
        if now - self._last < self._interval or not self._refresh_lock.acquire(blocking=False):
            return
        try:
            self._last = now
            self.collect()
        except Exception:
            _log.debug("budget reader: collect failed", exc_info=True)
        finally:
            self._refresh_lock.release()

    def _receive_metrics(
        self,
        metrics_data: MetricsData,
        timeout_millis: float = 10_000,
        **kwargs: Any,
    ) -> None:
        cost: dict[str, float] = {}
        tokens: dict[str, float] = {}
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == sc.METRIC_AGENT_COST:
                        table = cost
                    elif metric.name == sc.METRIC_GEN_AI_CLIENT_TOKEN_USAGE:
                        table = tokens
                    else:
                        continue
                    for point in metric.data.data_points:
                        value = (
                            point.value
                            if isinstance(point, NumberDataPoint)
                            else point.sum
                            if isinstance(point, _HistogramDataPoint)
                            else 0
                        )
                        agent = (point.attributes or {}).get(sc.GEN_AI_AGENT_NAME)
                        cost_or_tokens = float(value)
                        table[_TOTAL] = table.get(_TOTAL, 0.0) + cost_or_tokens
                        if isinstance(agent, str) and agent:
                            table[agent] = table.get(agent, 0.0) + cost_or_tokens
        self._guard.set_totals(cost, tokens)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release."""


_guards_lock = threading.Lock()
# Copy-on-write: check_budget (before every LLM call) reads it without taking the lock.
_guards: tuple[BudgetGuard, ...] = ()


def _reinit_after_fork() -> None:
    global _guards_lock
    _guards_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def register_guard(guard: BudgetGuard) -> BudgetGuard:
    """Makes ``check_budget`` consult ``guard`` (idempotent); returns it."""
    global _guards
    with _guards_lock:
        if guard not in _guards:
            _guards = (*_guards, guard)
    return guard


def unregister_guard(guard: BudgetGuard) -> None:
    """Stops ``check_budget`` from consulting ``guard``."""
    global _guards
    with _guards_lock:
        _guards = tuple(g for g in _guards if g is not guard)


def check_budget(agent_name: str | None = None) -> None:
    """The hook the spans API's ``inference()`` calls before starting an LLM call.

    Raises:
        BudgetExceededError: a registered guard has an exceeded ``refuse`` budget covering
            ``agent_name`` (or all agents).  Any other failure is swallowed.
    """
    for guard in _guards:
        try:
            guard.check(agent_name)
        except BudgetExceededError:
            raise
        except Exception:
            _log.debug("budget check failed", exc_info=True)


def install_budget_guard(
    budgets: Iterable[Budget],
    *,
    tracer_provider: Any = None,
    pricebook: Any = None,
) -> BudgetGuard:
    """Creates a guard fed by the tracer provider's spans and registers it for check_budget.

    Args:
        budgets: the budgets to enforce.
        tracer_provider: SDK tracer provider; the global one when None.
        pricebook: optional ``PriceBook`` for inference spans that arrive unpriced.

    Raises:
        ValueError: a budget is invalid (configuration time, not a hot path).
    """
    from opentelemetry import trace

    guard = BudgetGuard(budgets, pricebook=pricebook)
    tp = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    add = getattr(tp, "add_span_processor", None)
    if add is None:
        _log.warning("otel-agents budget guard: tracer provider %r takes no span processors", tp)
    else:
        add(guard)
    return register_guard(guard)
