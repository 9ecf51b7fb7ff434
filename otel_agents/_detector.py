# SPDX-License-Identifier: Apache-2.0
"""``opentelemetry_resource_detector`` entry point: the agent of this process as a Resource.

A leaf module on purpose: ``opentelemetry.sdk._logs`` evaluates ``Resource.create({})`` at import
time, which loads detector entry points, so a detector that imported the rest of the package
could find it half-initialized.  Only ``semconv`` and ``environment_variables`` (both names
only) are imported here.

Select it with ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS=otel_agents`` (zero-code) or pass
``AgentResourceDetector()`` to ``get_aggregated_resources``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from opentelemetry.sdk.resources import Resource, ResourceDetector

from otel_agents import environment_variables as ev
from otel_agents import semconv as sc

__all__ = ["KNOWN_FRAMEWORKS", "AgentResourceDetector"]

_log = logging.getLogger(__name__)

#: Distribution names of agent frameworks and model SDKs reported when installed.
KNOWN_FRAMEWORKS: tuple[str, ...] = (
    "a2a-sdk",
    "ag2",
    "agno",
    "anthropic",
    "autogen",
    "autogen-agentchat",
    "autogen-core",
    "pyautogen",
    "crewai",
    "google-adk",
    "google-genai",
    "haystack-ai",
    "langchain",
    "langchain-core",
    "langgraph",
    "litellm",
    "llama-index",
    "llama-index-core",
    "mcp",
    "mistralai",
    "openai",
    "openai-agents",
    "pydantic-ai",
    "pydantic-ai-slim",
    "semantic-kernel",
    "smolagents",
)

# OTel resource semantic conventions (host, os, process); spelled here to keep the leaf small.
_HOST_NAME = "host.name"
_HOST_ARCH = "host.arch"
_OS_TYPE = "os.type"
_PROCESS_PID = "process.pid"
_PROCESS_PARENT_PID = "process.parent_pid"
_PROCESS_EXECUTABLE_NAME = "process.executable.name"
_PROCESS_EXECUTABLE_PATH = "process.executable.path"
_PROCESS_OWNER = "process.owner"
_PROCESS_CREATION_TIME = "process.creation.time"
_PROCESS_RUNTIME_NAME = "process.runtime.name"
_PROCESS_RUNTIME_VERSION = "process.runtime.version"

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "x86"}


class AgentResourceDetector(ResourceDetector):
    """Detects ``gen_ai.main_agent.*``, host / process facts and installed agent frameworks.

    Agent identity comes from ``OTEL_AGENTS_AGENT_ID`` / ``_NAME`` / ``_DESCRIPTION`` or, for the
    fields not set there, from the A2A Agent Card JSON named by ``OTEL_AGENTS_AGENT_CARD``.
    Frameworks are reported as ``agent.frameworks`` (names) plus
    ``agent.framework.version.<name>``.

    Args:
        raise_on_error: re-raise a detection failure (an unreadable Agent Card, ...) instead of
            logging it and returning what could be detected.
    """

    def __init__(self, raise_on_error: bool = False) -> None:
        super().__init__(raise_on_error=raise_on_error)

    def is_process_dependent(self) -> bool:
        """True: ``process.pid`` and friends must be re-detected in a forked child."""
        return True

    def detect(self) -> Resource:
        """Builds the Resource; never raises unless ``raise_on_error``."""
        attrs: dict[str, Any] = {}
        for step in (self._agent, self._host_process, self._frameworks):
            try:
                attrs.update(step())
            except Exception:
                if self.raise_on_error:
                    raise
                _log.warning(
                    "otel-agents resource detector: %s failed", step.__name__, exc_info=True
                )
        return Resource(attrs)

    # -- parts ----------------------------------------------------------------------------
    def _agent(self) -> dict[str, Any]:
        card: dict[str, Any] = {}
        path = os.environ.get(ev.OTEL_AGENTS_AGENT_CARD, "").strip()
        if path:
            with open(path, encoding="utf-8") as fh:
                loaded = json.load(fh)
            if not isinstance(loaded, dict):
                raise ValueError(f"{ev.OTEL_AGENTS_AGENT_CARD}: {path} is not a JSON object")
            card = loaded
        out: dict[str, Any] = {}
        for attr, env, card_value in (
            (sc.GEN_AI_MAIN_AGENT_ID, ev.OTEL_AGENTS_AGENT_ID, _card_id(card)),
            (sc.GEN_AI_MAIN_AGENT_NAME, ev.OTEL_AGENTS_AGENT_NAME, card.get("name")),
            (
                sc.GEN_AI_MAIN_AGENT_DESCRIPTION,
                ev.OTEL_AGENTS_AGENT_DESCRIPTION,
                card.get("description"),
            ),
        ):
            value = os.environ.get(env, "").strip() or card_value
            if isinstance(value, str) and value:
                out[attr] = value
        version = card.get("version")
        if isinstance(version, str) and version:
            out[sc.GEN_AI_AGENT_VERSION] = version
        return out

    def _host_process(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            _HOST_NAME: socket.gethostname(),
            _OS_TYPE: _os_type(sys.platform),
            _PROCESS_PID: os.getpid(),
            _PROCESS_RUNTIME_NAME: sys.implementation.name,
            _PROCESS_RUNTIME_VERSION: platform.python_version(),
        }
        machine = platform.machine().lower()
        if machine:
            out[_HOST_ARCH] = _ARCH.get(machine, machine)
        try:
            import psutil

            proc = psutil.Process()
            with proc.oneshot():
                out[_PROCESS_PARENT_PID] = proc.ppid()
                exe = proc.exe()
                if exe:
                    out[_PROCESS_EXECUTABLE_PATH] = exe
                    out[_PROCESS_EXECUTABLE_NAME] = os.path.basename(exe)
                out[_PROCESS_OWNER] = proc.username()
                out[_PROCESS_CREATION_TIME] = datetime.fromtimestamp(
                    proc.create_time(), tz=timezone.utc
                ).isoformat()
        except Exception:
            # psutil may be denied details in containers; the basic facts above still stand.
            _log.debug("otel-agents resource detector: psutil facts unavailable", exc_info=True)
        return out

    def _frameworks(self) -> dict[str, Any]:
        found: list[str] = []
        out: dict[str, Any] = {}
        for name in KNOWN_FRAMEWORKS:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
            found.append(name)
            out[sc.AGENT_FRAMEWORK_VERSION_PREFIX + name] = version
        if found:
            out[sc.AGENT_FRAMEWORKS] = found
        return out


def _os_type(platform_id: str) -> str:
    """``sys.platform`` to the ``os.type`` well-known value (``freebsd14`` -> ``freebsd``)."""
    if platform_id in ("win32", "cygwin"):
        return "windows"
    if platform_id.startswith("sunos"):
        return "solaris"
    return platform_id.rstrip("0123456789")


def _card_id(card: dict[str, Any]) -> str | None:
    # The Agent Card has no id field; its endpoint URL is the stable, non-process-local
    # identity the gen_ai.main_agent.id convention asks for.
    explicit = card.get("id")
    if isinstance(explicit, str) and explicit:
        return explicit
    interfaces = card.get("supportedInterfaces") or card.get("supported_interfaces")
    if isinstance(interfaces, list):
        for item in interfaces:
            if isinstance(item, dict) and isinstance(item.get("url"), str) and item["url"]:
                return str(item["url"])
    url = card.get("url")
    return url if isinstance(url, str) and url else None
