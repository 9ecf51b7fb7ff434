# SPDX-License-Identifier: Apache-2.0
"""The public surface of otel_agents: explicit, sorted, complete, reporting the public module."""

from __future__ import annotations
import __future__

import inspect

import otel_agents

PUBLIC_MODULES = {
    "semconv",
    "environment_variables",
    "testing",
    "receiver",
    "processors",
    "exporters",
}


def test_all_is_sorted_and_unique() -> None:
    """__all__ is explicit, sorted and without duplicates."""
    assert otel_agents.__all__ == sorted(set(otel_agents.__all__))


def test_all_lists_exactly_the_public_names() -> None:
    """Every public (non-underscore, non-module) name of the package is in __all__ and vice versa."""
    public = {
        name
        for name, value in vars(otel_agents).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and not isinstance(value, __future__._Feature)  # `from __future__ import annotations`
    }
    assert set(otel_agents.__all__) == public


def test_exported_objects_report_the_public_module() -> None:
    """Exported classes and functions say otel_agents, not the underscore module, in __module__."""
    for name in otel_agents.__all__:
        obj = getattr(otel_agents, name)
        assert getattr(obj, "__module__", "otel_agents") == "otel_agents", name


def test_every_export_is_documented() -> None:
    """Each exported object has a docstring."""
    for name in otel_agents.__all__:
        assert inspect.getdoc(getattr(otel_agents, name)), name


def test_core_spans_api_is_exported() -> None:
    """The spans API named in docs/architecture.md is reachable from the package root."""
    for name in (
        "invoke_agent",
        "invoke_workflow",
        "plan",
        "execute_tool",
        "inference",
        "chat",
        "text_completion",
        "embeddings",
        "record_decision",
        "configure",
        "PriceBook",
    ):
        assert name in otel_agents.__all__, name
