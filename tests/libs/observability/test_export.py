"""Where spans go: HANDRAIL_OTEL_EXPORTER, else the standard OpenTelemetry variables, read as the SDK reads them."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from tests.fixtures.otlp import OtlpReceiver, otlp_receiver

from handrail.errors import ContractError
from handrail.observability import JsonLinesExporter, TracingConfig, setup_tracing
from handrail.observability.export import protocol, resource, span_exporters
from handrail.service.settings import TracingSettings

GRPC_MODULE = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment without any tracing variable of the test runner's."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "HANDRAIL_OTEL_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


def settings(env: pytest.MonkeyPatch, **variables: str) -> TracingConfig:
    for name, value in variables.items():
        env.setenv(name, value)
    return TracingSettings().tracing()


def export_one_span(exporters: list[SpanExporter], config: TracingConfig, service: str = "router") -> None:
    provider = TracerProvider(resource=resource(config, service))
    for exporter in exporters:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("step"):
        pass
    provider.shutdown()


def test_nothing_set_makes_spans_but_exports_none(env: pytest.MonkeyPatch) -> None:
    config = settings(env)
    assert span_exporters(config, "router") == []
    assert resource(config, "router").attributes["service.name"] == "handrail-router"


def test_a_standard_endpoint_sends_otlp_over_http_with_the_standard_headers_and_resource(
    env: pytest.MonkeyPatch, receiver: OtlpReceiver
) -> None:
    config = settings(
        env,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer t0ken,x-tenant=a%20b",
        OTEL_SERVICE_NAME="edge-router",
        OTEL_RESOURCE_ATTRIBUTES="service.name=ignored,deployment.environment.name=staging",
    )
    exporters = span_exporters(config, "router")
    assert [type(e) for e in exporters] == [OTLPSpanExporter]
    export_one_span(exporters, config)
    [span] = receiver.spans()
    assert span["name"] == "step"
    # OTEL_SERVICE_NAME wins over OTEL_RESOURCE_ATTRIBUTES' service.name, and both over Handrail's default.
    assert span["resource"]["service.name"] == "edge-router"
    assert span["resource"]["deployment.environment.name"] == "staging"
    [headers] = receiver.requests
    assert headers["authorization"] == "Bearer t0ken" and headers["x-tenant"] == "a b"
    assert headers["content-type"] == "application/x-protobuf"


def test_the_traces_endpoint_and_headers_win_over_the_general_ones(
    env: pytest.MonkeyPatch, receiver: OtlpReceiver
) -> None:
    config = settings(
        env,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{receiver.url}/v1/traces",  # used as it is, path included
        OTEL_EXPORTER_OTLP_HEADERS="x-which=general",
        OTEL_EXPORTER_OTLP_TRACES_HEADERS="x-which=traces",
    )
    export_one_span(span_exporters(config, "validator"), config, "validator")
    [span] = receiver.spans()
    assert span["resource"]["service.name"] == "handrail-validator"
    assert receiver.requests[0]["x-which"] == "traces"


def test_a_service_name_in_the_resource_attributes_wins_over_handrails(env: pytest.MonkeyPatch) -> None:
    config = settings(env, OTEL_RESOURCE_ATTRIBUTES="service.name=billing-router")
    assert resource(config, "router").attributes["service.name"] == "billing-router"


@pytest.mark.parametrize(
    ("variables", "chosen"),
    [
        ({}, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
            "http/protobuf",
        ),
    ],
)
def test_the_protocol_is_the_traces_one_then_the_general_one_then_http(
    env: pytest.MonkeyPatch, variables: dict[str, str], chosen: str
) -> None:
    assert protocol(settings(env, **variables))[0] == chosen


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"])
def test_an_unknown_protocol_is_refused_naming_the_variable(env: pytest.MonkeyPatch, variable: str) -> None:
    config = settings(env, OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318", **{variable: "http/json"})
    with pytest.raises(ContractError, match=f"{variable}='http/json': expected http/protobuf or grpc"):
        span_exporters(config, "router")


def test_grpc_without_the_extra_is_refused_naming_the_extra(env: pytest.MonkeyPatch) -> None:
    env.setitem(sys.modules, GRPC_MODULE, None)  # as if opentelemetry-exporter-otlp-proto-grpc were absent
    config = settings(env, OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    with pytest.raises(ContractError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the grpc extra.*handrail\[grpc\]"):
        span_exporters(config, "router")
    with pytest.raises(ContractError, match=r"HANDRAIL_OTEL_EXPORTER=otlp-grpc needs the grpc extra"):
        span_exporters(settings(env, HANDRAIL_OTEL_EXPORTER="otlp-grpc"), "router")


def test_grpc_with_the_extra_uses_its_exporter_configured_by_the_sdk(env: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []

    class GrpcExporter(ConsoleSpanExporter):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__()
            made.append(kwargs)

    module = ModuleType(GRPC_MODULE)
    module.OTLPSpanExporter = GrpcExporter  # type: ignore[attr-defined]
    env.setitem(sys.modules, GRPC_MODULE, module)
    config = settings(env, OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc")
    assert [type(e) for e in span_exporters(config, "router")] == [GrpcExporter]
    assert made == [{"endpoint": None}]  # the SDK's exporter reads the endpoint, headers ... itself


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"])
@pytest.mark.parametrize("headers", ["Bearer-s3cret", "=s3cret", "x-ok=1,auth s3cret", "a b=s3cret"])
def test_malformed_headers_are_refused_naming_the_variable_not_the_value(
    env: pytest.MonkeyPatch, variable: str, headers: str
) -> None:
    config = settings(env, OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318", **{variable: headers})
    with pytest.raises(ContractError, match=f"^{variable}: entry [12] is not key=value") as refused:
        span_exporters(config, "router")
    assert "s3cret" not in str(refused.value)


def test_malformed_resource_attributes_are_refused_naming_the_variable(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ContractError, match=r"^OTEL_RESOURCE_ATTRIBUTES: entry 2 is not key=value"):
        span_exporters(settings(env, OTEL_RESOURCE_ATTRIBUTES="team=payments,staging"), "router")


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
def test_an_http_endpoint_without_a_scheme_is_refused_naming_the_variable(
    env: pytest.MonkeyPatch, variable: str
) -> None:
    with pytest.raises(ContractError, match=f"{variable}='collector:4318': expected an http:// or https:// URL"):
        span_exporters(settings(env, **{variable: "collector:4318"}), "router")


@pytest.mark.parametrize(
    ("traces_exporter", "kinds"),
    [
        ("console", [ConsoleSpanExporter]),
        ("none", []),
        ("otlp, console", [OTLPSpanExporter, ConsoleSpanExporter]),
        ("", [OTLPSpanExporter]),  # empty counts as unset: the endpoint turns OTLP on
    ],
)
def test_otel_traces_exporter_chooses_the_exporters(
    env: pytest.MonkeyPatch, traces_exporter: str, kinds: list[type[SpanExporter]]
) -> None:
    config = settings(env, OTEL_TRACES_EXPORTER=traces_exporter, OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318")
    assert [type(e) for e in span_exporters(config, "router")] == kinds


def test_an_unknown_traces_exporter_is_refused_naming_the_variable(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ContractError, match="OTEL_TRACES_EXPORTER='zipkin': expected otlp, console, none"):
        span_exporters(settings(env, OTEL_TRACES_EXPORTER="zipkin"), "router")


def test_handrail_otel_exporter_wins_over_the_standard_variables(env: pytest.MonkeyPatch) -> None:
    standard = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert span_exporters(settings(env, HANDRAIL_OTEL_EXPORTER="none", **standard), "router") == []
    assert setup_tracing("router", settings(env, HANDRAIL_OTEL_EXPORTER="off")) is None
    with pytest.raises(ContractError, match="HANDRAIL_OTEL_EXPORTER='jaeger': expected off, none, console"):
        span_exporters(settings(env, HANDRAIL_OTEL_EXPORTER="jaeger"), "router")


def test_handrail_otel_endpoint_is_the_base_url_for_otlp_http(env: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    config = settings(
        env,
        HANDRAIL_OTEL_EXPORTER="otlp-http",
        HANDRAIL_OTEL_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",  # HANDRAIL_OTEL_ENDPOINT wins
        OTEL_EXPORTER_OTLP_HEADERS="x-tenant=handrail",  # still read by the exporter
    )
    export_one_span(span_exporters(config, "router"), config)
    assert [s["resource"]["service.name"] for s in receiver.spans()] == ["handrail-router"]
    assert receiver.requests[0]["x-tenant"] == "handrail"


def test_the_file_exporter_writes_one_json_line_per_span_under_the_services_name(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = settings(env, HANDRAIL_OTEL_EXPORTER=f"file:{tmp_path}/{{service}}.jsonl")
    exporters = span_exporters(config, "validator")
    assert [type(e) for e in exporters] == [JsonLinesExporter]
    export_one_span(exporters, config, "validator")
    [line] = (tmp_path / "validator.jsonl").read_text().splitlines()
    span = json.loads(line)
    assert span["name"] == "step" and span["resource"]["service.name"] == "handrail-validator"


def test_the_settings_repr_shows_no_header(env: pytest.MonkeyPatch) -> None:
    config = settings(env, OTEL_EXPORTER_OTLP_HEADERS="authorization=s3cret")
    assert "s3cret" not in repr(config) and "s3cret" not in repr(TracingSettings())
