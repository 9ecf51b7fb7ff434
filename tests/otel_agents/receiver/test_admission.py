# SPDX-License-Identifier: Apache-2.0
"""Admission control: in-flight bytes and memory budget → retryable refusals with a delay."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from otel_agents._configtypes import decode
from otel_agents._errors import ConfigError, RetryableError
from otel_agents.receiver import AdmissionConfig, AdmissionController

from ._transport_fixtures import (
    grpc_call,
    http_post,
    retry_delay,
    stack_fixture,
    trace_request,
    wait_for,
)

KIB = 1024


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_inflight_budget_refuses_with_delay() -> None:
    """Over max_inflight_bytes → RetryableError with a delay within the configured bounds."""
    ctl = AdmissionController(AdmissionConfig(max_inflight_bytes=100 * KIB, min_retry_delay=0.5))
    first = ctl.admit(80 * KIB)
    with pytest.raises(RetryableError) as err:
        ctl.admit(30 * KIB)
    assert 0.5 <= err.value.retry_after <= 5.0
    assert "busy" in str(err.value)
    first.release()
    first.release()  # idempotent
    assert ctl.inflight_bytes == 0
    with ctl.admit(30 * KIB):
        assert ctl.inflight_bytes == 30 * KIB
    assert ctl.inflight_bytes == 0


def test_lone_request_larger_than_budget_is_admitted() -> None:
    """An idle receiver admits one request even past the budget, so none starves forever."""
    ctl = AdmissionController(AdmissionConfig(max_inflight_bytes=10 * KIB))
    with ctl.admit(50 * KIB) as ticket:
        ticket.grow(50 * KIB)  # growing alone is fine too
        with pytest.raises(RetryableError):
            ctl.admit(1)


def test_grow_refused_when_others_hold_the_budget() -> None:
    """Streaming growth past the budget while others are in flight is refused."""
    ctl = AdmissionController(AdmissionConfig(max_inflight_bytes=100 * KIB))
    other = ctl.admit(60 * KIB)
    ticket = ctl.admit(10 * KIB)
    with pytest.raises(RetryableError):
        ticket.grow(40 * KIB)
    ticket.release()
    other.release()
    assert ctl.inflight_bytes == 0


def test_retry_delay_tracks_drain_rate() -> None:
    """The delay is in-flight bytes / observed drain rate, clamped to [min, max]."""
    clock = Clock()
    cfg = AdmissionConfig(max_inflight_bytes=10_000 * KIB, min_retry_delay=0.1, max_retry_delay=4)
    ctl = AdmissionController(cfg, clock=clock)
    for _ in range(4):  # drain 1000 KiB/s
        t = ctl.admit(500 * KIB)
        clock.t += 0.5
        t.release()
    held = ctl.admit(2000 * KIB)
    assert ctl.retry_delay() == pytest.approx(2.0, rel=0.05)
    more = ctl.admit(8000 * KIB)
    assert ctl.retry_delay() == 4.0  # clamped to max
    held.release()
    more.release()


def test_memory_budget_sampled_not_per_request() -> None:
    """RSS over memory_limit refuses; RSS is sampled at most once per interval."""
    clock = Clock()
    rss = {"value": 100 << 20, "calls": 0}

    def read_rss() -> int:
        rss["calls"] += 1
        return rss["value"]

    cfg = AdmissionConfig(memory_limit=200 << 20, memory_check_interval=0.5)
    ctl = AdmissionController(cfg, rss=read_rss, clock=clock)
    for _ in range(50):
        ctl.admit(1).release()
    assert rss["calls"] == 1
    rss["value"] = 300 << 20
    ctl.admit(1).release()  # still the old sample
    clock.t += 0.6
    with pytest.raises(RetryableError, match="memory budget") as err:
        ctl.admit(1)
    assert err.value.retry_after >= cfg.min_retry_delay
    rss["value"] = 150 << 20
    clock.t += 0.6
    ctl.admit(1).release()


def test_default_memory_budget_is_256_mib() -> None:
    """The default RSS budget is issue 8's 256 MiB."""
    assert AdmissionConfig().memory_limit == 256 << 20


def test_embedded_receiver_counts_growth_not_the_host() -> None:
    """In a host process (this pytest session) the budget counts RSS growth since start."""
    import psutil

    from otel_agents.receiver._admission import process_is_receiver

    assert not process_is_receiver()  # pytest is not the otel-agents command line
    clock = Clock()
    ctl = AdmissionController(AdmissionConfig(memory_limit=64 << 20), clock=clock)
    assert ctl.memory_scope == "growth"
    # The session's own memory (far above 80 % of 64 MiB once grpc and protobuf are loaded) is
    # not held against the receiver, so it admits.
    assert psutil.Process().memory_info().rss > 64 << 20
    ctl.admit(1).release()
    grown = bytearray(60 << 20)  # RSS growth past 80 % of the budget refuses
    try:
        grown[::4096] = b"\x01" * len(grown[::4096])  # touch every page
        clock.t += 1.0  # past memory_check_interval: the next admit samples RSS again
        with pytest.raises(RetryableError, match="RSS growth since start"):
            ctl.admit(1)
    finally:
        del grown
    whole = AdmissionController(
        AdmissionConfig(memory_limit=64 << 20), clock=clock, memory_scope="process"
    )
    with pytest.raises(RetryableError, match="MiB RSS >"):
        whole.admit(1)


def test_cli_process_counts_its_whole_rss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started as ``otel-agents`` or ``python -m otel_agents._cli``, the whole RSS counts."""
    import importlib.machinery
    import sys
    import types

    from otel_agents.receiver._admission import process_is_receiver

    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/otel-agents", "serve"])
    assert process_is_receiver()
    assert AdmissionController(AdmissionConfig()).memory_scope == "process"
    monkeypatch.setattr(sys, "argv", ["-m"])
    main = types.ModuleType("__main__")
    main.__spec__ = importlib.machinery.ModuleSpec("otel_agents._cli", None)
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert process_is_receiver()
    assert AdmissionController(AdmissionConfig()).memory_scope == "process"


def test_config_validation() -> None:
    """Bad retry bounds are config errors naming the key."""
    with pytest.raises(ConfigError, match=r"admission\.max_retry_delay"):
        decode(AdmissionConfig, {"min_retry_delay": "2s", "max_retry_delay": "1s"}, "admission")
    cfg = decode(AdmissionConfig, {"max_inflight_bytes": "32MiB", "memory_limit": "1GiB"})
    assert cfg.max_inflight_bytes == 32 << 20 and cfg.memory_limit == 1 << 30


class BlockingIngestor:
    """A real ingestor that holds each call until released — a slow spool commit."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.items = 0

    def ingest(self, signal: str, request: Message, payload: bytes, items: int) -> None:
        self.entered.set()
        assert self.release.wait(10)
        self.items += items


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_overload_answers_retryable_on_the_wire(transport: str) -> None:
    """While one request holds the budget, the next gets UNAVAILABLE+RetryInfo / 503+Retry-After."""
    body = trace_request(50, attrs=10).SerializeToString()
    ctl = AdmissionController(
        AdmissionConfig(max_inflight_bytes=len(body) + 10, min_retry_delay=0.5)
    )
    gen = stack_fixture(admission=ctl)
    stack = next(gen)
    blocking = BlockingIngestor()
    stack.handler.ingestor = blocking
    try:
        with ThreadPoolExecutor(1) as pool:
            if transport == "grpc":
                first = pool.submit(grpc_call, stack.grpc_target, body)
                assert blocking.entered.wait(5)
                refused = grpc_call(stack.grpc_target, body)
                assert refused.code == grpc.StatusCode.UNAVAILABLE
                gauge = stack.registry.get_sample_value("otel_agents_receiver_inflight_bytes")
                assert gauge == len(body)  # the held request's bytes
                rich, trailer = retry_delay(refused)
                assert rich is not None and rich >= 0.5 and trailer == rich
                blocking.release.set()
                assert first.result(10).code == grpc.StatusCode.OK
            else:
                first_http = pool.submit(http_post, stack, "/v1/traces", body)
                assert blocking.entered.wait(5)
                r = http_post(stack, "/v1/traces", body)
                assert r.status == 503 and int(r.headers["retry-after"]) >= 1
                blocking.release.set()
                assert first_http.result(10).status == 200
        assert wait_for(lambda: ctl.inflight_bytes == 0)
        assert stack.registry.get_sample_value("otel_agents_receiver_inflight_bytes") == 0
        assert blocking.items == 50
    finally:
        blocking.release.set()
        gen.close()


class SlowIngestor:
    """A real ingestor whose commit takes 10 ms (a busy spool); keeps the span IDs it stored."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.span_ids: list[bytes] = []

    def ingest(self, signal: str, request: Message, payload: bytes, items: int) -> None:
        time.sleep(0.01)
        ids = [
            s.span_id
            for rs in request.resource_spans  # type: ignore[attr-defined]
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        with self.lock:
            self.span_ids.extend(ids)


def test_overload_only_ever_answers_unavailable_with_retry_info() -> None:
    """RC-03 (light): 4 senders × 15 requests against room for ~1 request: every refusal is
    UNAVAILABLE with RetryInfo in both encodings, never another code, and after honouring the
    delays every span is stored exactly once."""
    one = trace_request(20).SerializeToString()
    ctl = AdmissionController(
        AdmissionConfig(
            max_inflight_bytes=len(one) + 100, min_retry_delay=0.05, max_retry_delay=0.2
        )
    )
    gen = stack_fixture(admission=ctl)
    stack = next(gen)
    slow = SlowIngestor()
    stack.handler.ingestor = slow
    codes: list[grpc.StatusCode] = []
    lock = threading.Lock()

    def sender(k: int) -> None:
        for n in range(15):

            def unique(i: int, span: Any, base: int = k * 10_000 + n * 100) -> None:
                span.span_id = (base + i + 1).to_bytes(8, "big")

            body = trace_request(20, customize=unique).SerializeToString()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                result = grpc_call(stack.grpc_target, body)
                with lock:
                    codes.append(result.code)
                if result.code == grpc.StatusCode.OK:
                    break
                rich, trailer = retry_delay(result)
                assert rich is not None and rich == trailer
                time.sleep(rich)

    try:
        with ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(sender, k) for k in range(4)]:
                f.result(60)
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
        assert codes.count(grpc.StatusCode.OK) == 60
        assert codes.count(grpc.StatusCode.UNAVAILABLE) > 0  # the budget did bite
        assert len(slow.span_ids) == 60 * 20 == len(set(slow.span_ids))
    finally:
        gen.close()


def test_memory_refusals_start_at_80_percent_of_the_budget() -> None:
    """RSS between 80 % and 100 % of memory_limit already refuses (spike headroom, as otelcol)."""
    clock = Clock()
    rss = {"value": 159 << 20}
    cfg = AdmissionConfig(memory_limit=200 << 20, memory_check_interval=0.1)
    ctl = AdmissionController(cfg, rss=lambda: rss["value"], clock=clock)
    ctl.admit(1).release()
    rss["value"] = 161 << 20
    clock.t += 0.2
    with pytest.raises(RetryableError, match=r"161 MiB RSS > 160 MiB, 80 % of 200 MiB"):
        ctl.admit(1)
