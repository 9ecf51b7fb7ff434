# SPDX-License-Identifier: Apache-2.0
"""The receiver's configuration: one Collector-style YAML file, typed and validated at load.

::

    receivers:
      otlp:
        protocols:
          grpc: {endpoint: 127.0.0.1:4317}
          http: {endpoint: 127.0.0.1:4318}
    admin: {endpoint: 127.0.0.1:4319}
    storage: {data_dir: ./otel-agents-data, max_bytes: 1GiB, retention: 24h}
    analysis: {sampling: adaptive, cpu_budget: 0.3}   # analysis never starves ingest
    processors:
      bottleneck: {}
    exporters:
      otlp/tempo: {endpoint: "grpc://tempo:4317"}
    pipeline:
      processors: [bottleneck]
      exporters: [otlp/tempo]

As in the Collector, listing ``protocols`` enables exactly the protocols listed (a null entry
such as ``grpc:`` means "enabled with defaults"); unknown keys are errors naming their key path;
every default binds to loopback.  Components are referenced by ``type[/name]`` IDs and their
settings are decoded by the factory registered for ``type`` in ``otel_agents.processors.FACTORIES``
or ``otel_agents.exporters.FACTORIES``.

``pipeline.processors`` / ``pipeline.exporters`` left out (null) mean: every configured component
plus one default instance of every other registered type (except types that cannot work without
settings, such as ``otlp``), so the analysis runs out of the box; ``[]`` turns them off.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from otel_agents._configtypes import DURATION, SIZE, decode
from otel_agents._errors import ConfigError
from otel_agents.receiver._transport_config import (
    AdminConfig,
    AdmissionConfig,
    GrpcConfig,
    HttpConfig,
    LimitsConfig,
)

__all__ = [
    "AnalysisBudgetConfig",
    "ComponentConfig",
    "PipelineConfig",
    "ReceiverConfig",
    "StorageConfig",
    "forward_exporter",
    "load_config",
]

#: Component types whose default config is not usable (they need an endpoint...): never added
#: implicitly to a pipeline.
NEEDS_SETTINGS = frozenset({"otlp"})


@dataclasses.dataclass(frozen=True)
class ProtocolsConfig:
    """``receivers.otlp.protocols``: the OTLP/gRPC and OTLP/HTTP servers."""

    grpc: GrpcConfig = dataclasses.field(default_factory=GrpcConfig)
    http: HttpConfig = dataclasses.field(default_factory=HttpConfig)

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        if not (self.grpc.enabled or self.http.enabled):
            return ["grpc: must specify at least one protocol when using the OTLP receiver"]
        return []


@dataclasses.dataclass(frozen=True)
class OtlpReceiverConfig:
    """``receivers.otlp``."""

    protocols: ProtocolsConfig = dataclasses.field(default_factory=ProtocolsConfig)


@dataclasses.dataclass(frozen=True)
class ReceiversConfig:
    """``receivers``: only ``otlp`` exists."""

    otlp: OtlpReceiverConfig = dataclasses.field(default_factory=OtlpReceiverConfig)


@dataclasses.dataclass(frozen=True)
class StorageConfig:
    """``storage``: the durable spool (see ``_spool.py`` for the durability guarantees).

    Attributes:
        data_dir: directory of the spool and of components' own stores.
        max_bytes: payload bytes the spool may hold; when a lagging destination pins this much,
            new data is refused with a retryable error (throttling), never dropped silently.
        retention: longest a spooled request waits for a destination that does not take it
            before it is dropped for that destination (counted as ``reason="expired"``);
            ``0`` = wait forever (then only ``max_bytes`` bounds the spool).
        redact_secrets: mask the default secret deny set (credential keys such as
            ``authorization`` / ``*password*`` / ``*_token``, and ``sk-...`` / ``Bearer ...``
            values; see ``otel_agents.exporters._redact``) before a request is stored, so
            neither the spool nor the analysis nor any destination ever sees them.
        synchronous: SQLite ``synchronous``: ``NORMAL`` survives process crashes, ``FULL`` also
            power loss (one fsync per request).
    """

    data_dir: str = "./otel-agents-data"
    max_bytes: int = dataclasses.field(default=1 << 30, metadata=SIZE)
    retention: float = dataclasses.field(default=86400.0, metadata=DURATION)
    synchronous: str = "NORMAL"
    redact_secrets: bool = True

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        problems = []
        if not self.data_dir:
            problems.append("data_dir: must not be empty")
        if self.max_bytes < 1 << 20:
            problems.append("max_bytes: must be at least 1MiB")
        if self.synchronous not in ("NORMAL", "FULL"):
            problems.append(f"synchronous: must be NORMAL or FULL, got {self.synchronous!r}")
        return problems


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """``pipeline``: which components run, in order.

    Attributes:
        processors: processor IDs in order; ``None`` = the default analysis set (see module doc).
        exporters: exporter IDs; ``None`` = every configured exporter plus defaults.
        tick_interval: how often components' ``tick`` runs.
        drain_timeout: on shutdown, how long forwarders may keep sending what is spooled.
    """

    processors: tuple[str, ...] | None = None
    exporters: tuple[str, ...] | None = None
    tick_interval: float = dataclasses.field(default=1.0, metadata=DURATION)
    drain_timeout: float = dataclasses.field(default=5.0, metadata=DURATION)

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        problems = []
        for key, ids in (("processors", self.processors), ("exporters", self.exporters)):
            if ids is not None and len(set(ids)) != len(ids):
                problems.append(f"{key}: duplicate component ID")
        if self.tick_interval <= 0:
            problems.append("tick_interval: must be positive")
        return problems


@dataclasses.dataclass(frozen=True)
class AnalysisBudgetConfig:
    """``analysis``: how much CPU analysis may take (analysis never starves ingest).

    Under load the receiver analyses a consistent sample of whole traces (the OpenTelemetry
    consistent probability sampling rule on the trace ID's randomness, so every span of a trace
    and every shard agree) and forwards everything; counts, cost and token roll-ups are then
    estimates scaled by 1/fraction, marked so in ``/api/v1`` and the demo report.

    Attributes:
        sampling: ``adaptive`` (default: 100 % whenever the budget allows, less under load),
            ``off`` (always analyse every trace, whatever it costs ingest), or a fixed
            fraction in (0, 1] such as ``0.2``.
        cpu_budget: analysis CPU as a share of the rest of the receiver's CPU (``adaptive``).
        cpu_floor: analysis CPU always allowed, in cores, however idle the rest is, so that
            light traffic is analysed in full (``adaptive``).
    """

    sampling: Any = "adaptive"
    cpu_budget: float = 0.3
    cpu_floor: float = 0.05

    @property
    def mode(self) -> str | float:
        """``"adaptive"``, ``"off"`` or the fixed fraction."""
        if self.sampling is False:
            return "off"  # YAML 1.1 reads a bare ``off`` as false
        if self.sampling in ("adaptive", "off"):
            return str(self.sampling)
        if isinstance(self.sampling, bool):
            raise ValueError("a boolean")
        return float(self.sampling)

    def validate(self) -> list[str]:
        """Key paths with a problem, for ``decode``."""
        problems = []
        try:
            mode = self.mode
        except (TypeError, ValueError):
            problems.append(
                f"sampling: must be adaptive, off or a fraction in (0, 1], got {self.sampling!r}"
            )
        else:
            if isinstance(mode, float) and not 2.0**-56 <= mode <= 1.0:
                problems.append(f"sampling: a fraction must be in (0, 1], got {self.sampling!r}")
        if self.cpu_budget <= 0:
            problems.append("cpu_budget: must be positive")
        if self.cpu_floor < 0:
            problems.append("cpu_floor: must not be negative")
        return problems


@dataclasses.dataclass(frozen=True)
class ComponentConfig:
    """One configured component: its ``type[/name]`` ID and its decoded settings."""

    id: str
    type: str
    name: str
    config: Any


@dataclasses.dataclass(frozen=True)
class ReceiverConfig:
    """The whole receiver configuration (``otel-agents serve --config FILE``).

    Attributes:
        receivers: the OTLP servers (``receivers.otlp.protocols.grpc`` / ``.http``).
        admin: the admin endpoint (health, metrics, API, page).
        storage: the durable spool.
        admission: overload protection.
        limits: per-request limits.
        processors: processor ID → settings (raw mapping; decoded by :func:`load_config`).
        exporters: exporter ID → settings (raw mapping; decoded by :func:`load_config`).
        pipeline: which components run.
        analysis: the analysis CPU budget (sampling under load).
    """

    receivers: ReceiversConfig = dataclasses.field(default_factory=ReceiversConfig)
    admin: AdminConfig = dataclasses.field(default_factory=AdminConfig)
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)
    admission: AdmissionConfig = dataclasses.field(default_factory=AdmissionConfig)
    limits: LimitsConfig = dataclasses.field(default_factory=LimitsConfig)
    processors: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    exporters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    analysis: AnalysisBudgetConfig = dataclasses.field(default_factory=AnalysisBudgetConfig)

    def validate(self) -> list[str]:
        """Cross-section rules, for ``decode``."""
        if self.storage.max_bytes < self.limits.max_request_bytes:
            # A maximal request must fit in the spool, or its sender would be refused forever.
            return ["storage.max_bytes: must be at least limits.max_request_bytes"]
        return []

    @property
    def grpc(self) -> GrpcConfig:
        """Shortcut to ``receivers.otlp.protocols.grpc``."""
        return self.receivers.otlp.protocols.grpc

    @property
    def http(self) -> HttpConfig:
        """Shortcut to ``receivers.otlp.protocols.http``."""
        return self.receivers.otlp.protocols.http

    def components(self, kind: str) -> list[ComponentConfig]:
        """The pipeline's ``"processors"`` or ``"exporters"`` in order, with decoded settings.

        Raises:
            ConfigError: unknown type, bad settings, or a pipeline ID that is not configured.
        """
        factories = _factories(kind)
        configured: Mapping[str, Any] = getattr(self, kind)
        listed: tuple[str, ...] | None = getattr(self.pipeline, kind)
        out: list[ComponentConfig] = []
        if listed is None:
            ids = list(configured)
            types_used = {i.partition("/")[0] for i in ids}
            ids += [t for t in factories if t not in types_used and t not in NEEDS_SETTINGS]
        else:
            ids = list(listed)
            for i, cid in enumerate(ids):
                if cid not in configured and cid.partition("/")[0] not in factories:
                    raise ConfigError(
                        f"pipeline.{kind}[{i}]: {cid!r} is not configured under {kind}"
                    )
        for cid in ids:
            type_, _, name = cid.partition("/")
            path = f"{kind}.{cid}"
            factory = factories.get(type_)
            if factory is None:
                known = ", ".join(sorted(factories)) or "none registered"
                raise ConfigError(f"{path}: unknown {kind[:-1]} type {type_!r} (known: {known})")
            out.append(
                ComponentConfig(
                    cid, type_, name, decode(factory.config_class, configured.get(cid), path)
                )
            )
        return out

    def check(self) -> None:
        """Decode every component's settings now, so errors surface at load time.

        Raises:
            ConfigError: naming the key path.
        """
        for kind in ("processors", "exporters"):
            self.components(kind)
            factories = _factories(kind)
            listed = getattr(self.pipeline, kind)
            for cid, raw in getattr(self, kind).items():
                type_, sep, name = cid.partition("/")
                if not type_ or (sep and not name):
                    raise ConfigError(f"{kind}.{cid}: component IDs are type[/name]")
                if listed is not None and cid not in listed:
                    # Configured but unused: still validated, like the Collector does.
                    if type_ not in factories:
                        raise ConfigError(f"{kind}.{cid}: unknown {kind[:-1]} type {type_!r}")
                    decode(factories[type_].config_class, raw, f"{kind}.{cid}")


def _factories(kind: str) -> Mapping[str, Any]:
    if kind == "processors":
        from otel_agents.processors import FACTORIES as processor_factories

        return processor_factories
    from otel_agents.exporters import FACTORIES as exporter_factories

    return exporter_factories


def forward_exporter(url: str) -> tuple[str, dict[str, Any]]:
    """``--forward`` URL → ``(exporter id, raw settings)`` of an ``otlp`` exporter.

    ``grpc://host:port`` forwards over OTLP/gRPC, ``http://host:port`` (or ``https://``) over
    OTLP/HTTP protobuf.

    Raises:
        ConfigError: for any other scheme.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not rest or scheme not in ("grpc", "http", "https"):
        raise ConfigError(f"--forward: expected grpc://host:port or http://host:port, got {url!r}")
    protocol = "grpc" if scheme == "grpc" else "http/protobuf"
    return "otlp/" + rest.replace("/", "_"), {"endpoint": url, "protocol": protocol}


def _set_path(data: dict[str, Any], dotted: str, value: object) -> None:
    node = data
    keys = dotted.split(".")
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[: i + 1])}: expected a mapping, got {child!r}")
        node = child
    node[keys[-1]] = value


def _normalize_protocols(data: dict[str, Any]) -> None:
    receivers = data.get("receivers")
    if not isinstance(receivers, dict):
        return
    otlp = receivers.get("otlp")
    if not isinstance(otlp, dict):
        return
    protocols = otlp.get("protocols")
    if not isinstance(protocols, dict):
        return
    for name in ("grpc", "http"):
        if name not in protocols:
            protocols[name] = {"enabled": False}  # Collector: only listed protocols run
        elif protocols[name] is None:
            protocols[name] = {}  # "grpc:" with no value = enabled with defaults


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> ReceiverConfig:
    """Load and validate the receiver configuration.

    Args:
        path: YAML file; ``None`` = all defaults.
        overrides: dotted key path → value, applied on top of the file before validation
            (``{"receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0"}``); the CLI flags use
            it.  The key ``exporters`` may map extra exporter IDs to settings; they are merged.

    Raises:
        ConfigError: naming the key path (``exporters.otlp/x.timeout: expected a duration...``).
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"<root>: expected a mapping, got {type(loaded).__name__}")
        data = copy.deepcopy(loaded or {})
    _normalize_protocols(data)
    for key, value in (overrides or {}).items():
        if key == "exporters" and isinstance(value, Mapping):
            exporters = data.get("exporters") or {}
            if not isinstance(exporters, dict):
                raise ConfigError("exporters: expected a mapping")
            exporters.update(value)
            data["exporters"] = exporters
            pipeline = data.get("pipeline") or {}
            if isinstance(pipeline, dict) and pipeline.get("exporters") is not None:
                listed = list(pipeline["exporters"])
                pipeline["exporters"] = listed + [cid for cid in value if cid not in listed]
        else:
            _set_path(data, key, value)
    config = decode(ReceiverConfig, data)
    for kind in ("processors", "exporters"):
        for cid, raw in getattr(config, kind).items():
            if raw is not None and not isinstance(raw, Mapping):
                raise ConfigError(f"{kind}.{cid}: expected a mapping, got {type(raw).__name__}")
    config.check()
    return config
