# SPDX-License-Identifier: Apache-2.0
"""Redaction before forwarding: default secret deny set, content removal, byte-level pre-check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from otel_agents.exporters import RedactionConfig, Redactor
from otel_agents.exporters._redact import MASK

from otel_agents import semconv as sc


def _traces(attrs: dict[str, AnyValue]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "chat gpt-4o"
    for k, v in attrs.items():
        span.attributes.append(KeyValue(key=k, value=v))
    return request


def _s(value: str) -> AnyValue:
    return AnyValue(string_value=value)


def _attrs(payload: bytes) -> dict[str, AnyValue]:
    request = ExportTraceServiceRequest.FromString(payload)
    return {kv.key: kv.value for kv in request.resource_spans[0].scope_spans[0].spans[0].attributes}


def test_secret_keys_are_masked_but_token_counts_are_not() -> None:
    """Deny-set keys are masked; GenAI usage token counts and token types are left alone."""
    request = _traces(
        {
            "http.request.header.authorization": _s("Basic dXNlcjpwYXNz"),
            "db.password": _s("hunter2"),
            "openai.api_key": _s("abc"),
            "oauth.access_token": _s("xyz"),
            "http.response.header.set-cookie": _s("sid=1"),
            sc.GEN_AI_USAGE_INPUT_TOKENS: AnyValue(int_value=120),
            "gen_ai.token.type": _s("input"),
        }
    )
    out, count = Redactor(RedactionConfig()).apply("traces", request.SerializeToString())
    attrs = _attrs(out)
    assert count == 5
    for key in (
        "http.request.header.authorization",
        "db.password",
        "openai.api_key",
        "oauth.access_token",
        "http.response.header.set-cookie",
    ):
        assert attrs[key].string_value == MASK
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS].int_value == 120
    assert attrs["gen_ai.token.type"].string_value == "input"


def test_credential_looking_values_are_masked_in_place() -> None:
    """Provider keys and bearer credentials inside any string value are replaced, text kept."""
    request = _traces(
        {
            "error.message": _s("401 for key sk-proj-abcdefghijklmnopqrstuv, retry"),
            "note": _s("sent Bearer eyJhbGciOiJIUzI1NiJ9.payload to upstream"),
            "nested": AnyValue(
                kvlist_value=KeyValueList(values=[KeyValue(key="cfg.secret", value=_s("s"))])
            ),
        }
    )
    out, count = Redactor(RedactionConfig()).apply("traces", request.SerializeToString())
    attrs = _attrs(out)
    assert attrs["error.message"].string_value == f"401 for key {MASK}, retry"
    assert attrs["note"].string_value == f"sent {MASK} to upstream"
    assert attrs["nested"].kvlist_value.values[0].value.string_value == MASK
    assert count == 3


def test_content_attributes_are_removed_only_when_enabled() -> None:
    """GenAI content (messages, tool arguments...) is dropped with content=true, kept otherwise."""
    request = _traces(
        {
            sc.GEN_AI_INPUT_MESSAGES: _s('[{"role":"user","content":"hi"}]'),
            sc.GEN_AI_TOOL_CALL_ARGUMENTS: _s('{"q":"x"}'),
            sc.GEN_AI_REQUEST_MODEL: _s("gpt-4o"),
        }
    )
    payload = request.SerializeToString()
    kept, n = Redactor(RedactionConfig()).apply("traces", payload)
    assert kept is payload and n == 0
    out, n = Redactor(RedactionConfig(content=True)).apply("traces", payload)
    assert set(_attrs(out)) == {sc.GEN_AI_REQUEST_MODEL}
    assert n == 2


def test_nothing_to_redact_returns_the_same_bytes_object() -> None:
    """The byte pre-check avoids parsing and re-encoding ordinary GenAI spans."""
    payload = _traces(
        {
            sc.GEN_AI_USAGE_INPUT_TOKENS: AnyValue(int_value=1),
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: AnyValue(int_value=2),
            sc.GEN_AI_REQUEST_MODEL: _s("claude-sonnet-4"),
        }
    ).SerializeToString()
    out, n = Redactor(RedactionConfig()).apply("traces", payload)
    assert out is payload and n == 0


def test_logs_and_metrics_attributes_are_redacted() -> None:
    """Log record attributes, GenAI event bodies (content) and data point attributes are covered."""
    logs = ExportLogsServiceRequest()
    rec = logs.resource_logs.add().scope_logs.add().log_records.add()
    rec.event_name = "gen_ai.client.inference.operation.details"
    rec.body.string_value = "the whole prompt"
    rec.attributes.append(KeyValue(key="user.password", value=_s("p")))
    out, n = Redactor(RedactionConfig(content=True)).apply("logs", logs.SerializeToString())
    got = ExportLogsServiceRequest.FromString(out).resource_logs[0].scope_logs[0].log_records[0]
    assert not got.HasField("body") and got.attributes[0].value.string_value == MASK and n == 2

    metrics = ExportMetricsServiceRequest()
    m = metrics.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = "x"
    m.sum.data_points.add().attributes.append(KeyValue(key="api-key", value=_s("k")))
    out, n = Redactor(RedactionConfig()).apply("metrics", metrics.SerializeToString())
    got_m = ExportMetricsServiceRequest.FromString(out)
    assert (
        got_m.resource_metrics[0]
        .scope_metrics[0]
        .metrics[0]
        .sum.data_points[0]
        .attributes[0]
        .value.string_value
        == MASK
    )


def test_custom_patterns_apply_and_secrets_can_be_turned_off() -> None:
    """blocked_key_patterns / blocked_values add rules; secrets=false disables the defaults."""
    request = _traces(
        {"user.email": _s("a@b.c"), "card": _s("4111 1111 1111 1111"), "db.password": _s("p")}
    )
    config = RedactionConfig(
        secrets=False, blocked_key_patterns=("email",), blocked_values=(r"\d{4}( \d{4}){3}",)
    )
    out, n = Redactor(config).apply("traces", request.SerializeToString())
    attrs = _attrs(out)
    assert attrs["user.email"].string_value == MASK
    assert attrs["card"].string_value == MASK
    assert attrs["db.password"].string_value == "p"
    assert n == 2


_KEYS = st.one_of(
    st.sampled_from(
        [
            "authorization",
            "x-api_key",
            "my_token",
            "input_tokens",
            "gen_ai.token.type",
            "Cookie",
            "SECRET",
            "ſecret",
            "api_\u212aey",
            "passwd",
            "tokenizer",
            "credentials",
            "private-key",
            sc.GEN_AI_INPUT_MESSAGES,
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
)
_VALUES = st.one_of(
    st.sampled_from(
        ["sk-abcdefghijklmnopqrstu", "Bearer abcdefghij", "AKIAABCDEFGHIJKLMNOP", "plain"]
    ),
    st.text(max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=6), st.booleans())
def test_precheck_never_skips_something_the_full_rules_would_redact(
    attrs: dict[str, str], content: bool
) -> None:
    """The byte-level pre-check only ever skips requests the attribute rules leave unchanged."""
    payload = _traces({k: _s(v) for k, v in attrs.items()}).SerializeToString()
    fast = Redactor(RedactionConfig(content=content))
    slow = Redactor(RedactionConfig(content=content))
    slow._custom = True  # force the parse path: the reference result
    assert fast.apply("traces", payload) == slow.apply("traces", payload)


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"",
            b"AuThOrIz",
            b"KEY",
            b"PASSW",
            b"CREDENTIAL",
            b"TOKEN\x12",
            b"token\x13",
            b"SK-",
            b"Bearer",
            b"AKIA",
            b"GHP_",
            b"gh_",
            b"\xc5\xbfecret",
            b"\xe2\x84\xaaey",
        ]
    ),
    st.binary(max_size=40),
)
def test_precheck_engines_agree_with_the_stdlib_precheck(
    head: bytes, word: bytes, tail: bytes
) -> None:
    """Hyperscan and RE2 pre-filters hit exactly where the stdlib substring check does."""
    from otel_agents.exporters import _redact

    assert _redact._SECRETS_RE2 is not None, "google-re2 is a dependency"
    payload = head + word + tail
    expected = _redact._secrets_might_match_stdlib(payload)
    assert (_redact._SECRETS_RE2.search(payload) is not None) == expected
    if _redact._SECRETS_HS is not None:
        assert _redact._SECRETS_HS(payload) == expected
    assert _redact._secrets_might_match(payload) == expected


def test_hyperscan_is_used_where_it_is_a_dependency() -> None:
    """On x86-64 (where pyproject requires it) the pre-check runs on Hyperscan."""
    import platform

    from otel_agents.exporters import _redact

    if platform.machine() != "x86_64":
        pytest.skip("hyperscan is an x86-64-only dependency; RE2 does the pre-check here")
    assert _redact._SECRETS_HS is not None


def test_hyperscan_precheck_is_right_on_many_threads_at_once() -> None:
    """Concurrent scans (one scratch space per thread) each get their own payload's answer."""
    import threading

    from otel_agents.exporters import _redact

    check = _redact._SECRETS_HS
    if check is None:
        pytest.skip("hyperscan not installed (non-x86-64): RE2 does the pre-check")
    clean = bytes(range(32, 127)).replace(b"key", b"").replace(b"KEY", b"") * 2000
    dirty = clean[:50_000] + b"x-Api-KEY" + clean[50_000:]
    assert not _redact._secrets_might_match_stdlib(clean)
    wrong: list[bool] = []

    def run(payload: bytes, expected: bool) -> None:
        for _ in range(200):
            if check(payload) != expected:
                wrong.append(True)

    threads = [
        threading.Thread(target=run, args=(dirty if i % 2 else clean, bool(i % 2)))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not wrong
