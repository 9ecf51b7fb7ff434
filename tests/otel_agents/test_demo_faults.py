# SPDX-License-Identifier: Apache-2.0
"""Acceptance (b): each ``--inject`` fault leaves its own, distinct signature in the spans.

Every demo here has two runs; the fault hits only the second, so the first is the clean
baseline from the same process pair.  :func:`signatures` reads the spans the way a detector
would, and each fault must show exactly its own signature in the faulted trace and none in the
clean one.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Sequence

import pytest

from otel_agents import _demo_faults as faults
from otel_agents import semconv as sc
from otel_agents.testing import OtlpSink, ReceivedSpan
from tests.otel_agents.test_demo import CLIENT, SERVER, DemoRun, run_demo

ERROR = 2  # OTLP status code
# 200x compression: durations stay well above the per-span CPU overhead even on a busy machine,
# so the slow-tool signature (a duration share) is not drowned by scheduling noise
TIME_SCALE = "0.005"


def _op(span: ReceivedSpan) -> object:
    return span.attributes.get(sc.GEN_AI_OPERATION_NAME)


def _cost(spans: Sequence[ReceivedSpan]) -> float:
    return sum(float(s.attributes.get(sc.GEN_AI_USAGE_COST_AMOUNT, 0.0)) for s in spans)


def signatures(spans: Sequence[ReceivedSpan]) -> set[str]:
    """The fault signatures present in one trace, judged from its spans alone."""
    found: set[str] = set()
    by_id = {s.span_id: s for s in spans}
    leaves = [s for s in spans if not any(c.parent_span_id == s.span_id for c in spans)]
    root = next(s for s in spans if not s.parent_span_id)

    # slow-tool: a tool call is the longest leaf and takes over a third of the whole trace
    longest = max(leaves, key=lambda s: s.duration_s)
    if _op(longest) == sc.OP_EXECUTE_TOOL and longest.duration_s > root.duration_s / 3:
        found.add(faults.SLOW_TOOL)

    # token-spike: an inference call reading 5x the input of any other call in the trace
    inputs = sorted(
        (int(s.attributes.get(sc.GEN_AI_USAGE_INPUT_TOKENS, 0)), s.name)
        for s in spans
        if _op(s) == sc.OP_CHAT
        and s.attributes.get(sc.GEN_AI_REQUEST_MODEL) != faults.COST_RUNAWAY_MODEL
    )
    if len(inputs) > 1 and inputs[-1][0] > 5 * inputs[-2][0]:
        found.add(faults.TOKEN_SPIKE)

    # error-burst: the same tool failing three or more times
    failures = collections.Counter(
        s.attributes.get(sc.GEN_AI_TOOL_NAME)
        for s in spans
        if _op(s) == sc.OP_EXECUTE_TOOL and s.status_code == ERROR
    )
    if failures and max(failures.values()) >= 3:
        found.add(faults.ERROR_BURST)

    # tool-loop: the same tool with identical arguments five or more times
    calls = collections.Counter(
        (s.attributes.get(sc.GEN_AI_TOOL_NAME), s.attributes.get(sc.AGENT_TOOL_ARGS_HASH))
        for s in spans
        if _op(s) == sc.OP_EXECUTE_TOOL
    )
    if calls and max(calls.values()) >= 5:
        found.add(faults.TOOL_LOOP)

    # a2a-break: a span whose parent never arrived (the trace is not whole)
    if any(s.parent_span_id and s.parent_span_id not in by_id for s in spans):
        found.add(faults.A2A_BREAK)

    # cost-runaway: over a dollar in one run (a clean run costs a few cents)
    if _cost(spans) > 1.0:
        found.add(faults.COST_RUNAWAY)
    return found


@pytest.fixture(scope="module")
def sink() -> Iterator[OtlpSink]:
    with OtlpSink(http=False) as s:
        yield s


@pytest.fixture(scope="module")
def demo_runs(sink: OtlpSink) -> Callable[[str], DemoRun]:
    """One two-run demo per fault, run on first use and shared by the tests of this module."""
    cache: dict[str, DemoRun] = {}

    def get(fault: str) -> DemoRun:
        if fault not in cache:
            run = run_demo(sink, "--seed", "3", "--inject", fault, runs=2, time_scale=TIME_SCALE)
            marks = [line for line in run.stdout.splitlines() if f"[{fault}]" in line]
            assert [m.split()[1] for m in marks] == ["2/2"]  # only the second run is faulted
            cache[fault] = run
        return cache[fault]

    return get


@pytest.mark.parametrize("fault", faults.FAULTS)
def test_each_fault_has_its_own_signature(demo_runs: Callable[[str], DemoRun], fault: str) -> None:
    """The faulted run shows exactly the injected fault's signature; the clean run shows none."""
    run = demo_runs(fault)
    assert signatures(run.trace(0)) == set()
    assert signatures(run.trace(1)) == {fault}


def test_fault_details(demo_runs: Callable[[str], DemoRun]) -> None:
    """Each fault hits the agent, tool or model its documentation names, by the documented amount."""
    slow = demo_runs(faults.SLOW_TOOL).trace(1)
    longest = max(slow, key=lambda s: s.duration_s if _op(s) == sc.OP_EXECUTE_TOOL else 0)
    assert longest.name == f"execute_tool {faults.SLOW_TOOL_NAME}"
    assert longest.attributes[sc.GEN_AI_AGENT_NAME] == "researcher"

    spike = demo_runs(faults.TOKEN_SPIKE).trace(1)
    (hot,) = [s for s in spike if int(s.attributes.get(sc.GEN_AI_USAGE_INPUT_TOKENS, 0)) > 20_000]
    assert hot.attributes[sc.GEN_AI_AGENT_NAME] == faults.TOKEN_SPIKE_AGENT
    assert hot.attributes[sc.GEN_AI_REQUEST_MODEL] == faults.TOKEN_SPIKE_MODEL

    burst = demo_runs(faults.ERROR_BURST).trace(1)
    failed = [s for s in burst if s.status_code == ERROR and _op(s) == sc.OP_EXECUTE_TOOL]
    assert len(failed) == faults.ERROR_BURST_FAILURES
    assert {s.attributes[sc.ERROR_TYPE] for s in failed} == {faults.ERROR_BURST_ERROR_TYPE}
    assert {s.attributes[sc.GEN_AI_TOOL_NAME] for s in failed} == {faults.ERROR_BURST_TOOL}
    fallbacks = [
        a
        for s in burst
        for n, a in s.events
        if n == sc.EVENT_AGENT_DECISION and a[sc.AGENT_DECISION_TYPE] == "fallback"
    ]
    assert [a[sc.AGENT_DECISION_CHOSEN] for a in fallbacks] == ["cached_index"]

    loop = demo_runs(faults.TOOL_LOOP).trace(1)
    same = collections.Counter(
        s.attributes[sc.AGENT_TOOL_ARGS_HASH]
        for s in loop
        if s.name == f"execute_tool {faults.TOOL_LOOP_TOOL}"
    )
    assert max(same.values()) == faults.TOOL_LOOP_REPEATS + 1  # the first read and the loop

    broken = demo_runs(faults.A2A_BREAK)
    spans = broken.trace(1)
    ids = {s.span_id for s in spans}
    (server,) = [s for s in spans if s.name == "SendMessage" and s.kind == SERVER]
    (client,) = [s for s in spans if s.name == "SendMessage" and s.kind == CLIENT]
    assert server.parent_span_id not in ids  # parented on a span nobody exported
    assert server.trace_id == client.trace_id  # ...in the same trace id
    (clean_server,) = [s for s in broken.trace(0) if s.name == "SendMessage" and s.kind == SERVER]
    assert clean_server.parent_span_id in {s.span_id for s in broken.trace(0)}

    runaway = demo_runs(faults.COST_RUNAWAY)
    opus = [
        s
        for s in runaway.trace(1)
        if s.attributes.get(sc.GEN_AI_REQUEST_MODEL) == faults.COST_RUNAWAY_MODEL
    ]
    assert len(opus) == faults.COST_RUNAWAY_REVISIONS
    assert all(
        s.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] >= faults.COST_RUNAWAY_OUTPUT_TOKENS
        for s in opus
    )
    assert all(s.attributes[sc.GEN_AI_AGENT_NAME] == "planner" for s in opus)
    assert _cost(runaway.trace(1)) > 20 * _cost(runaway.trace(0))


class TestParsing:
    """``--inject`` values and the fault schedule."""

    def test_parse_repeatable_and_comma_separated(self) -> None:
        """Repeated and comma-separated values combine; blanks are ignored."""
        parsed = faults.parse_faults(["slow-tool,token-spike", " tool-loop ", ""])
        assert parsed.to_wire() == ["slow-tool", "token-spike", "tool-loop"]

    def test_parse_rejects_unknown(self) -> None:
        """An unknown fault name raises ValueError listing the valid names."""
        with pytest.raises(ValueError, match=r"unknown fault 'slowtool'.*cost-runaway"):
            faults.parse_faults(["slowtool"])

    def test_wire_round_trip_ignores_unknown(self) -> None:
        """A peer's list survives the wire; names this version does not know are dropped."""
        assert faults.FaultSet.from_wire(["a2a-break", "future-fault", 3]).to_wire() == [
            "a2a-break"
        ]
        assert not faults.FaultSet.from_wire("a2a-break")

    @pytest.mark.parametrize(
        ("runs", "expected"),
        [(1, [0]), (2, [1]), (3, [2]), (6, [4, 5]), (24, list(range(16, 24)))],
    )
    def test_faulted_runs_are_the_last_third(self, runs: int, expected: list[int]) -> None:
        """Faults hit the last third of the runs (at least one) and never the first of several."""
        assert list(faults.faulted_runs(runs)) == expected
