# SPDX-License-Identifier: Apache-2.0
"""The agent resource detector: identity from env / Agent Card, host, process, frameworks."""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource, get_aggregated_resources

from otel_agents import semconv as sc
from otel_agents._detector import AgentResourceDetector

CARD = {
    "name": "travel-planner",
    "description": "Plans trips",
    "version": "3.1.0",
    "supportedInterfaces": [
        {"url": "https://agents.example.com/travel", "protocolBinding": "JSONRPC"}
    ],
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_AGENTS_AGENT_ID",
        "OTEL_AGENTS_AGENT_NAME",
        "OTEL_AGENTS_AGENT_DESCRIPTION",
        "OTEL_AGENTS_AGENT_CARD",
    ):
        monkeypatch.delenv(name, raising=False)


def test_identity_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The env variables set gen_ai.main_agent.id/name/description."""
    monkeypatch.setenv("OTEL_AGENTS_AGENT_ID", "arn:aws:bedrock:agent/123")
    monkeypatch.setenv("OTEL_AGENTS_AGENT_NAME", "planner")
    monkeypatch.setenv("OTEL_AGENTS_AGENT_DESCRIPTION", "plans")
    attrs = AgentResourceDetector().detect().attributes
    assert attrs[sc.GEN_AI_MAIN_AGENT_ID] == "arn:aws:bedrock:agent/123"
    assert attrs[sc.GEN_AI_MAIN_AGENT_NAME] == "planner"
    assert attrs[sc.GEN_AI_MAIN_AGENT_DESCRIPTION] == "plans"


def test_identity_from_agent_card_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Agent Card fields fill what the env does not set; the interface URL becomes the id."""
    path = tmp_path / "card.json"
    path.write_text(json.dumps(CARD))
    monkeypatch.setenv("OTEL_AGENTS_AGENT_CARD", str(path))
    monkeypatch.setenv("OTEL_AGENTS_AGENT_NAME", "override")
    attrs = AgentResourceDetector().detect().attributes
    assert attrs[sc.GEN_AI_MAIN_AGENT_ID] == "https://agents.example.com/travel"
    assert attrs[sc.GEN_AI_MAIN_AGENT_NAME] == "override"
    assert attrs[sc.GEN_AI_MAIN_AGENT_DESCRIPTION] == "Plans trips"
    assert attrs[sc.GEN_AI_AGENT_VERSION] == "3.1.0"


def test_host_process_and_frameworks() -> None:
    """Host/process facts are the OTel names and installed frameworks carry their versions."""
    attrs = AgentResourceDetector().detect().attributes
    assert attrs["process.pid"] == os.getpid()
    assert attrs["process.parent_pid"] == os.getppid()
    assert attrs["host.name"] and attrs["os.type"] == "linux"
    assert str(attrs["process.executable.name"]).startswith("python")
    frameworks = list(attrs.get(sc.AGENT_FRAMEWORKS, ()))
    for name in frameworks:
        assert attrs[sc.AGENT_FRAMEWORK_VERSION_PREFIX + name] == metadata.version(name)
    try:
        expected = metadata.version("a2a-sdk")
    except metadata.PackageNotFoundError:
        return
    assert attrs[sc.AGENT_FRAMEWORK_VERSION_PREFIX + "a2a-sdk"] == expected


def test_bad_card_never_raises_unless_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An unreadable card is logged and skipped; with raise_on_error it propagates."""
    path = tmp_path / "card.json"
    path.write_text("{not json")
    monkeypatch.setenv("OTEL_AGENTS_AGENT_CARD", str(path))
    resource = get_aggregated_resources([AgentResourceDetector()], Resource.get_empty())
    assert resource.attributes["process.pid"] == os.getpid()  # the other parts still detected
    assert sc.GEN_AI_MAIN_AGENT_NAME not in resource.attributes
    monkeypatch.setenv("OTEL_AGENTS_AGENT_CARD", str(tmp_path / "missing.json"))
    assert sc.GEN_AI_MAIN_AGENT_ID not in AgentResourceDetector().detect().attributes
    with pytest.raises(FileNotFoundError):
        AgentResourceDetector(raise_on_error=True).detect()


def test_entry_point_declared() -> None:
    """pyproject declares the detector under opentelemetry_resource_detector as otel_agents."""
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    section = text.split("[project.entry-points.opentelemetry_resource_detector]", 1)[1]
    assert (
        section.split("[", 1)[0].strip().splitlines()[0]
        == 'otel_agents = "otel_agents._detector:AgentResourceDetector"'
    )


def test_os_type_well_known_values() -> None:
    """sys.platform ids map to the os.type well-known values."""
    from otel_agents._detector import _os_type

    assert [_os_type(p) for p in ("linux", "darwin", "win32", "freebsd14", "sunos5", "aix7")] == [
        "linux",
        "darwin",
        "windows",
        "freebsd",
        "solaris",
        "aix",
    ]
