"""Where a service's spans go: ``HANDRAIL_OTEL_EXPORTER``, else the standard OpenTelemetry variables.

The first rule that applies decides:

1. ``HANDRAIL_OTEL_EXPORTER`` is set: ``off`` (no tracing at all), ``none``, ``console``, ``otlp-http``,
   ``otlp-grpc`` or ``file:<path>``. OTLP goes to ``HANDRAIL_OTEL_ENDPOINT`` (a base URL) when that is set,
   else where the standard endpoint variables say.
2. ``OTEL_TRACES_EXPORTER`` is set: ``otlp``, ``console`` or ``none`` (comma-separated for more than one).
3. ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: ``otlp``.
4. Otherwise ``none``: spans are made (trace context still propagates) but go nowhere.

OTLP's protocol is ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``, else
``http/protobuf`` (in the base install); ``grpc`` needs the ``grpc`` extra. Everything else is read by the
OpenTelemetry SDK itself, as the specification says: the endpoint (``..._TRACES_ENDPOINT`` used as is,
``OTEL_EXPORTER_OTLP_ENDPOINT`` with ``/v1/traces`` appended for HTTP), headers, timeout, compression and
certificates by the exporter; ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` by ``Resource.create``.
A service is named ``handrail-<service>`` unless one of those two names it.

What the SDK would only log and skip (an unknown protocol, a header that is not ``key=value``) stops the
service at start here, naming the variable: a typo should not mean traces silently go nowhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from handrail.errors import ContractError
from handrail.observability.jsonlines import JsonLinesExporter

#: The values of ``HANDRAIL_OTEL_EXPORTER`` (and ``file:<path>``).
HANDRAIL_EXPORTERS = ("off", "none", "console", "otlp-http", "otlp-grpc")
#: The values of ``OTEL_TRACES_EXPORTER`` Handrail ships exporters for.
STANDARD_EXPORTERS = ("otlp", "console", "none")
#: OTLP's protocols; ``http/json`` is not offered by the Python SDK.
PROTOCOLS = ("http/protobuf", "grpc")
#: The specification's default protocol, and the one the base install exports with.
DEFAULT_PROTOCOL = "http/protobuf"

_GRPC_MISSING = "needs the grpc extra: pip install 'handrail[grpc]'"
#: A header or resource attribute key: printable ASCII except separators (W3C baggage's ``token``).
_KEY = re.compile(r"[!#-'*+\-.0-9A-Z^-z|~]+")


@dataclass(frozen=True)
class TracingConfig:
    """One process's tracing settings, as set: Handrail's own and the standard OpenTelemetry variables."""

    #: ``HANDRAIL_OTEL_EXPORTER``; None when unset (the standard variables decide).
    exporter: str | None = None
    #: ``HANDRAIL_OTEL_ENDPOINT``: the collector's base URL for ``otlp-http`` / ``otlp-grpc``.
    endpoint: str | None = None
    #: The standard ``OTEL_*`` variables that are set (not empty), by name.
    standard: Mapping[str, str] = field(default_factory=dict, repr=False)  # headers may hold credentials

    def first(self, *names: str) -> tuple[str, str] | None:
        """The first of the variables ``names`` that is set, and its value."""
        return next(((name, self.standard[name]) for name in names if name in self.standard), None)


def span_exporters(config: TracingConfig, service: str) -> list[SpanExporter]:
    """The exporters ``config`` asks for (none for ``off`` and ``none``); a bad value is a ``ContractError``."""
    _check_pairs(config, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
    _check_pairs(config, "OTEL_RESOURCE_ATTRIBUTES")
    if config.exporter is not None:
        return _handrail_exporters(config, service)
    return [_standard(name, config) for name in standard_exporter_names(config) if name != "none"]


def standard_exporter_names(config: TracingConfig) -> list[str]:
    """Rules 2 to 4: the exporters the standard variables ask for."""
    chosen = config.first("OTEL_TRACES_EXPORTER")
    if chosen is None:
        endpoint = config.first("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else ["none"]
    names = [name.strip().lower() for name in chosen[1].split(",") if name.strip()]
    unknown = [name for name in names if name not in STANDARD_EXPORTERS]
    if unknown or not names:
        raise ContractError(f"OTEL_TRACES_EXPORTER={chosen[1]!r}: expected {', '.join(STANDARD_EXPORTERS)}")
    return names


def protocol(config: TracingConfig) -> tuple[str, str]:
    """OTLP's protocol and the variable that chose it (``http/protobuf`` by default)."""
    chosen = config.first("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if chosen is None:
        return DEFAULT_PROTOCOL, "the default protocol"
    variable, value = chosen
    if value.strip() not in PROTOCOLS:
        raise ContractError(f"{variable}={value!r}: expected {' or '.join(PROTOCOLS)}")
    return value.strip(), f"{variable}={value.strip()}"


def resource(config: TracingConfig, service: str) -> Resource:
    """The process's resource: the standard variables' attributes, named ``handrail-<service>`` unless they name it."""
    attributes = _check_pairs(config, "OTEL_RESOURCE_ATTRIBUTES")
    named = "OTEL_SERVICE_NAME" in config.standard or SERVICE_NAME in attributes
    # Resource.create lets the attributes given here override the environment's, so the default is
    # given only when the environment names no service.
    return Resource.create({} if named else {SERVICE_NAME: f"handrail-{service}"})


def _handrail_exporters(config: TracingConfig, service: str) -> list[SpanExporter]:
    setting = config.exporter
    assert setting is not None
    if setting in ("off", "none"):
        return []
    if setting == "console":
        return [ConsoleSpanExporter()]
    if setting.startswith("file:"):
        return [JsonLinesExporter(Path(setting.removeprefix("file:").replace("{service}", service)))]
    if setting == "otlp-http":
        return [_otlp_http(config)]
    if setting == "otlp-grpc":
        return [_otlp_grpc(config, "HANDRAIL_OTEL_EXPORTER=otlp-grpc")]
    raise ContractError(f"HANDRAIL_OTEL_EXPORTER={setting!r}: expected {', '.join(HANDRAIL_EXPORTERS)} or file:<path>")


def _standard(name: str, config: TracingConfig) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    chosen, why = protocol(config)
    return _otlp_grpc(config, why) if chosen == "grpc" else _otlp_http(config)


def _otlp_http(config: TracingConfig) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if config.endpoint is not None:
        _check_url("HANDRAIL_OTEL_ENDPOINT", config.endpoint)
        return OTLPSpanExporter(endpoint=f"{config.endpoint.rstrip('/')}/v1/traces")
    if endpoint := config.first("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        _check_url(*endpoint)
    return OTLPSpanExporter()  # the endpoint, headers, timeout ... as the SDK reads them


def _otlp_grpc(config: TracingConfig, why: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )
    except ImportError:
        raise ContractError(f"{why} {_GRPC_MISSING}") from None
    exporter: SpanExporter = OTLPSpanExporter(endpoint=config.endpoint)  # None: as the SDK reads it
    return exporter


def _check_url(variable: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ContractError(f"{variable}={url!r}: expected an http:// or https:// URL")


def _check_pairs(config: TracingConfig, *names: str) -> dict[str, str]:
    """The ``key=value,...`` list in the first of ``names`` that is set, refused when an entry is malformed.

    The entry is not repeated in the error: a header may carry a credential.
    """
    chosen = config.first(*names)
    if chosen is None:
        return {}
    variable, value = chosen
    pairs: dict[str, str] = {}
    for number, entry in enumerate(value.split(","), start=1):
        if not entry.strip():
            continue
        key, sep, item = entry.partition("=")
        if not sep or not _KEY.fullmatch(key.strip()):
            raise ContractError(f"{variable}: entry {number} is not key=value (comma-separated, values URL-encoded)")
        pairs[key.strip()] = item.strip()
    return pairs
