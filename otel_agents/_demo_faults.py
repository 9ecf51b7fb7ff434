# SPDX-License-Identifier: Apache-2.0
"""The demo's injectable faults: six distinct, deterministic misbehaviours.

Each fault changes the demo agents in exactly one way, so that each leaves its own signature in
the spans and the receiver's analysis has something specific to find:

=============  ================================================================================
fault          signature in the spans
=============  ================================================================================
slow-tool      the researcher's first ``fetch_page`` hangs for ``SLOW_TOOL_SECONDS`` (normally
               0.3–1.6 s) and becomes the longest leaf on the trace's critical path
token-spike    the researcher's ``chat claude-sonnet-4-5`` call reads ~12x its usual input
               tokens (whole pages stuffed into the context)
error-burst    ``web_search`` fails ``ERROR_BURST_FAILURES`` times in a row (span status ERROR,
               ``error.type``) before the researcher falls back to its cached index
tool-loop      the researcher calls ``fetch_page`` ``TOOL_LOOP_REPEATS`` times with identical
               arguments (same ``agent.tool.args_hash``) without making progress
a2a-break      the planner's A2A request carries a ``traceparent`` naming a span that is never
               exported (an uninstrumented hop), so the researcher's SERVER span is an orphan
cost-runaway   the planner's writer switches to ``claude-opus-4-1`` and rewrites the report
               ``COST_RUNAWAY_REVISIONS`` times with huge outputs
=============  ================================================================================

Faults hit only the last runs of a demo (:func:`faulted_runs`), so every detector sees a clean
baseline first, and a faulted run can be compared with clean runs of the same output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

__all__ = [
    "A2A_BREAK",
    "COST_RUNAWAY",
    "COST_RUNAWAY_MODEL",
    "COST_RUNAWAY_OUTPUT_TOKENS",
    "COST_RUNAWAY_PROVIDER",
    "COST_RUNAWAY_REVISIONS",
    "DEFAULT_MAIN_JOB_FAULTS",
    "ERROR_BURST",
    "ERROR_BURST_ERROR_TYPE",
    "ERROR_BURST_FAILURES",
    "ERROR_BURST_TOOL",
    "FAULTS",
    "SLOW_TOOL",
    "SLOW_TOOL_NAME",
    "SLOW_TOOL_SECONDS",
    "TOKEN_SPIKE",
    "TOKEN_SPIKE_AGENT",
    "TOKEN_SPIKE_FACTOR",
    "TOKEN_SPIKE_MODEL",
    "TOOL_LOOP",
    "TOOL_LOOP_REPEATS",
    "TOOL_LOOP_TOOL",
    "FaultSet",
    "faulted_runs",
    "parse_faults",
]

SLOW_TOOL = "slow-tool"
TOKEN_SPIKE = "token-spike"
ERROR_BURST = "error-burst"
TOOL_LOOP = "tool-loop"
A2A_BREAK = "a2a-break"
COST_RUNAWAY = "cost-runaway"

#: Every fault ``--inject`` accepts, in documentation order.
FAULTS: tuple[str, ...] = (SLOW_TOOL, TOKEN_SPIKE, ERROR_BURST, TOOL_LOOP, A2A_BREAK, COST_RUNAWAY)

#: What the main job (``otel-agents demo`` without ``--inject``) injects: a bottleneck, a
#: token anomaly and an error burst for the alert rules — faults that leave the trace whole, so
#: the critical path and cost roll-ups stay meaningful.
DEFAULT_MAIN_JOB_FAULTS: tuple[str, ...] = (SLOW_TOOL, TOKEN_SPIKE, ERROR_BURST)

# slow-tool: a page fetch from an origin that answers just before the client's 60 s read
# timeout; long enough to be the fleet's top critical-path item with a third of runs faulted.
SLOW_TOOL_NAME = "fetch_page"
SLOW_TOOL_SECONDS = 58.0

# token-spike: one agent/model pair only, so the anomaly has one clear key.
TOKEN_SPIKE_AGENT = "researcher"
TOKEN_SPIKE_MODEL = "claude-sonnet-4-5"
TOKEN_SPIKE_FACTOR = 12

# error-burst: consecutive failures of one tool, then a fallback (the run still completes).
ERROR_BURST_TOOL = "web_search"
ERROR_BURST_FAILURES = 6
ERROR_BURST_ERROR_TYPE = "SearchBackendUnavailable"

# tool-loop: identical calls in one run (the same arguments, hence the same args hash).
TOOL_LOOP_TOOL = "fetch_page"
TOOL_LOOP_REPEATS = 10

# cost-runaway: an expensive model producing very long outputs, several times per run.
COST_RUNAWAY_MODEL = "claude-opus-4-1"
COST_RUNAWAY_PROVIDER = "anthropic"
COST_RUNAWAY_REVISIONS = 3
COST_RUNAWAY_OUTPUT_TOKENS = 14_000


@dataclasses.dataclass(frozen=True)
class FaultSet:
    """The faults active in one run (empty for a clean run).

    Attributes:
        faults: names from :data:`FAULTS`.
    """

    faults: frozenset[str] = frozenset()

    def __contains__(self, fault: object) -> bool:
        return fault in self.faults

    def __bool__(self) -> bool:
        return bool(self.faults)

    def to_wire(self) -> list[str]:
        """Sorted list (stable for JSON and for determinism checks)."""
        return sorted(self.faults)

    @classmethod
    def from_wire(cls, value: object) -> FaultSet:
        """Read what :meth:`to_wire` wrote; unknown names are ignored (older/newer peer)."""
        if not isinstance(value, list):
            return cls()
        return cls(frozenset(v for v in value if isinstance(v, str) and v in FAULTS))


def parse_faults(values: Iterable[str]) -> FaultSet:
    """Parse ``--inject`` values (repeatable, each may be comma-separated).

    Raises:
        ValueError: an unknown fault name (the message lists the valid ones).
    """
    names: set[str] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip()
            if not name:
                continue
            if name not in FAULTS:
                raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")
            names.add(name)
    return FaultSet(frozenset(names))


def faulted_runs(runs: int) -> range:
    """Indices (0-based) of the runs that get the injected faults: the last third, at least one.

    With a single run, that run is faulted; otherwise the first run is always clean, so a
    faulted run can be compared with a baseline from the same demo.
    """
    if runs <= 1:
        return range(runs)
    count = max(1, runs // 3)
    return range(runs - count, runs)
