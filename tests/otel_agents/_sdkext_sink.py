# SPDX-License-Identifier: Apache-2.0
"""Helpers over the public :class:`otel_agents.testing.OtlpSink` for the SDK-extension tests
whose subject runs in another process (A2A across processes, zero-code under
``opentelemetry-instrument``): the subprocess exports real OTLP/gRPC to the sink and the test
reads the decoded requests back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from otel_agents.testing import OtlpSink, attributes_to_dict


def arrived(sink: OtlpSink, predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether ``predicate()`` became true within ``timeout`` seconds.

    A bool rather than :meth:`OtlpSink.wait_for`'s ``TimeoutError``, so the caller's ``assert``
    can attach the subprocess's stderr to the failure.
    """
    try:
        sink.wait_for(lambda _sink: predicate(), timeout)
    except TimeoutError:
        return False
    return True


def metrics_with_resource(sink: OtlpSink) -> list[tuple[dict[str, Any], Metric]]:
    """Every metric received so far with its decoded resource attributes."""
    out: list[tuple[dict[str, Any], Metric]] = []
    for rec in sink.requests("metrics"):
        request = rec.request
        assert isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest)
        for rm in request.resource_metrics:
            resource = attributes_to_dict(rm.resource.attributes)
            out.extend((resource, m) for sm in rm.scope_metrics for m in sm.metrics)
    return out
