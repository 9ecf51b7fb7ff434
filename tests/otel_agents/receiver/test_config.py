# SPDX-License-Identifier: Apache-2.0
"""Receiver configuration: table-driven over testdata/*.yaml, overrides, and check-config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from otel_agents.exporters import FACTORIES as EXPORTERS
from otel_agents.exporters import OtlpExporterConfig, RedactionConfig, RetryConfig

from otel_agents._errors import ConfigError
from otel_agents.receiver._config import (
    PipelineConfig,
    ReceiverConfig,
    StorageConfig,
    forward_exporter,
    load_config,
)
from otel_agents.receiver._serve import main_check_config
from otel_agents.receiver._transport_config import (
    AdminConfig,
    AdmissionConfig,
    GrpcConfig,
    HttpConfig,
    LimitsConfig,
)

TESTDATA = Path(__file__).parent / "testdata"
MIB = 1 << 20

INVALID = {
    "invalid_unknown_top_level_key.yaml": "recievers: unknown key (known keys: admin, admission, "
    "analysis, exporters, limits, pipeline, processors, receivers, storage)",
    "invalid_typo_protocol.yaml": "receivers.otlp.protocols.grcp: unknown key (known keys: grpc, http)",
    "invalid_no_protocol.yaml": "receivers.otlp.protocols.grpc: must specify at least one protocol "
    "when using the OTLP receiver",
    "invalid_endpoint_without_port.yaml": "receivers.otlp.protocols.grpc.endpoint: expected "
    "host:port, got 'localhost'",
    "invalid_size.yaml": "storage.max_bytes: expected a size such as '64MiB', got 'lots'",
    "invalid_spool_too_small.yaml": "storage.max_bytes: must be at least 1MiB",
    "invalid_spool_smaller_than_request_limit.yaml": "storage.max_bytes: must be at least "
    "limits.max_request_bytes",
    "invalid_exporter_duration.yaml": "exporters.otlp/tempo.timeout: expected a duration such as "
    "'10s', got 'soon'",
    "invalid_exporter_without_endpoint.yaml": "exporters.otlp/tempo.endpoint: must be set "
    "(e.g. grpc://127.0.0.1:4317)",
    "invalid_redaction_regex.yaml": "exporters.otlp/x.redaction.blocked_values[0]: invalid regular "
    "expression: missing ), unterminated subpattern at position 0",
    "invalid_unknown_exporter_type.yaml": "exporters.jaeger: unknown exporter type 'jaeger' "
    "(known: {known})",
    "invalid_pipeline_reference.yaml": "pipeline.processors[0]: 'nosuch' is not configured under "
    "processors",
    "invalid_not_a_mapping.yaml": "<root>: expected a mapping, got list",
    "invalid_pipeline_not_a_list.yaml": "pipeline.exporters: expected a list, got str",
}


def test_every_invalid_testdata_file_has_an_expected_error() -> None:
    """The table below covers exactly the invalid_*.yaml files present."""
    assert {p.name for p in TESTDATA.glob("invalid_*.yaml")} == set(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config_fails_with_the_exact_key_path_error(name: str) -> None:
    """Each invalid file is rejected with a message naming the offending key."""
    with pytest.raises(ConfigError) as err:
        load_config(TESTDATA / name)
    assert str(err.value) == INVALID[name].format(known=", ".join(sorted(EXPORTERS)))


def test_default_file_equals_built_in_defaults_bound_to_loopback() -> None:
    """An empty file gives the defaults; every listener binds 127.0.0.1."""
    config = load_config(TESTDATA / "default.yaml")
    assert config == ReceiverConfig() == load_config(None)
    assert config.grpc.endpoint == "127.0.0.1:4317" and config.grpc.enabled
    assert config.http.endpoint == "127.0.0.1:4318" and config.http.enabled
    assert config.admin.endpoint == "127.0.0.1:4319"
    assert config.storage == StorageConfig("./otel-agents-data", 1 << 30, 86400.0, "NORMAL")


def test_full_file_decodes_every_section() -> None:
    """full.yaml sets every section; components decode into their factories' config classes."""
    config = load_config(TESTDATA / "full.yaml")
    assert config.grpc == GrpcConfig(endpoint="127.0.0.1:14317", max_workers=4)
    assert config.http == HttpConfig(endpoint="127.0.0.1:14318")
    assert config.admin == AdminConfig(endpoint="127.0.0.1:14319")
    assert config.storage == StorageConfig("/var/lib/otel-agents", 2 << 30, 43200.0, "FULL")
    assert config.admission == AdmissionConfig(max_inflight_bytes=128 * MIB)
    assert config.limits == LimitsConfig(max_request_bytes=32 * MIB)
    assert config.pipeline == PipelineConfig(
        processors=(),
        exporters=("otlp/tempo", "otlp/collector"),
        tick_interval=0.5,
        drain_timeout=10.0,
    )
    exporters = {c.id: c.config for c in config.components("exporters")}
    assert exporters == {
        "otlp/tempo": OtlpExporterConfig(
            endpoint="grpc://tempo.internal:4317",
            compression="none",
            timeout=10.0,
            signals=("traces",),
            retry_on_failure=RetryConfig(initial_interval=1.0, max_interval=10.0),
            redaction=RedactionConfig(content=True),
        ),
        "otlp/collector": OtlpExporterConfig(
            endpoint="http://collector.internal:4318",
            protocol="http/protobuf",
            headers={"x-scope-orgid": "team-a"},
        ),
    }
    assert config.components("processors") == []


def test_listing_protocols_enables_only_those_and_null_means_defaults() -> None:
    """As in the Collector: ``grpc:`` alone enables gRPC with defaults and leaves HTTP off."""
    config = load_config(TESTDATA / "only_grpc.yaml")
    assert config.grpc == GrpcConfig()
    assert not config.http.enabled


def test_overrides_win_over_the_file_and_are_validated() -> None:
    """Dotted-path overrides (the CLI flags) replace file values and go through validation."""
    config = load_config(
        TESTDATA / "full.yaml",
        {"receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:0", "storage.data_dir": "/tmp/x"},
    )
    assert config.grpc.endpoint == "127.0.0.1:0"
    assert config.grpc.max_workers == 4
    assert config.storage.data_dir == "/tmp/x"
    with pytest.raises(ConfigError, match=r"^storage\.retention: expected a duration"):
        load_config(None, {"storage.retention": "forever"})


def test_forward_urls_add_otlp_exporters_to_an_explicit_pipeline() -> None:
    """``--forward`` destinations are added to the exporters and to a listed pipeline."""
    fid, settings = forward_exporter("http://127.0.0.1:4318")
    config = load_config(TESTDATA / "full.yaml", {"exporters": {fid: settings}})
    ids = [c.id for c in config.components("exporters")]
    assert ids == ["otlp/tempo", "otlp/collector", "otlp/127.0.0.1:4318"]
    assert config.components("exporters")[-1].config.protocol == "http/protobuf"
    with pytest.raises(ConfigError, match=r"^--forward: expected grpc://"):
        forward_exporter("tcp://x:1")


def test_default_pipeline_adds_default_instances_but_not_otlp() -> None:
    """With no pipeline lists, every registered type runs with defaults except ``otlp``."""
    config = load_config(None)
    ids = [c.id for c in config.components("exporters")]
    assert "otlp" not in ids
    assert ids == [t for t in EXPORTERS if t != "otlp"]


def test_config_objects_are_frozen() -> None:
    """Configuration cannot be mutated after load."""
    config = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.storage = StorageConfig()  # type: ignore[misc]


def test_check_config_command_reports_ok_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """``otel-agents check-config`` exits 0 on a valid file and 1 with the key path otherwise."""
    assert main_check_config([str(TESTDATA / "full.yaml")]) == 0
    assert "OK" in capsys.readouterr().out
    assert main_check_config([str(TESTDATA / "invalid_size.yaml")]) == 1
    assert "storage.max_bytes: expected a size" in capsys.readouterr().err
    assert main_check_config([str(TESTDATA / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_check_config_refuses_an_unauthenticated_public_bind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config applies the servers' exposure rule: 0.0.0.0 without token/mTLS fails."""
    path = tmp_path / "public.yaml"
    path.write_text(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:4317\n",
        encoding="utf-8",
    )
    assert main_check_config([str(path)]) == 1
    assert (
        "receivers.otlp.protocols.grpc.endpoint: '0.0.0.0:4317' is reachable"
        in capsys.readouterr().err
    )
    path.write_text(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:4317\n"
        "        insecure_public: true\n",
        encoding="utf-8",
    )
    assert main_check_config([str(path)]) == 0
