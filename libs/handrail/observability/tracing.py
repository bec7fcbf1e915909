"""Setting up OpenTelemetry tracing for a service.

Spans are batched (``BatchSpanProcessor``): nothing is flushed on the hot
path. The exporter is chosen by ``HANDRAIL_OTEL_EXPORTER``:

- ``off``: no tracing at all (no spans, no trace context in headers) - to measure what tracing costs;
- ``none`` (default): spans are created (trace ids still propagate) but not exported;
- ``console``: spans printed to stdout;
- ``otlp-http``: to a collector at ``HANDRAIL_OTEL_ENDPOINT`` (default ``http://127.0.0.1:4318``);
- ``otlp-grpc``: to a collector over gRPC (needs ``opentelemetry-exporter-otlp-proto-grpc``);
- ``file:<path>``: one JSON object per span per line, appended to ``<path>`` (offline debugging, tests);
  ``{service}`` in the path is replaced by the service's name, so services sharing the setting write apart.

W3C trace context travels in Kafka headers (``Publisher`` injects the current one on
publish, ``consume_span`` picks it up on consume), so one task is one trace across every
service it passes through. There is no span per published message: a message's consume
span is the child of the span that published it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from handrail.errors import ContractError

#: The instrumentation scope of Handrail's own spans.
TRACER_NAME = "handrail"


class JsonLinesExporter(SpanExporter):
    """Appends each finished span as one JSON line (OpenTelemetry's own JSON form) to a file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(_as_json(span)) + "\n" for span in spans)
        with self._lock, self._path.open("a") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _as_json(span: ReadableSpan) -> dict[str, Any]:
    """The span in OpenTelemetry's JSON shape; bytes attributes (Kafka keys) as text."""
    context = span.get_span_context()
    assert context is not None  # a finished SDK span always has one
    return {
        "name": span.name,
        "context": {"trace_id": f"0x{context.trace_id:032x}", "span_id": f"0x{context.span_id:016x}"},
        "parent_id": f"0x{span.parent.span_id:016x}" if span.parent else None,
        "kind": str(span.kind),
        "start_time": span.start_time,
        "end_time": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
        "resource": {k: _plain(v) for k, v in span.resource.attributes.items()},
    }


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _exporter(setting: str, endpoint: str, service: str) -> SpanExporter | None:
    if setting == "none":
        return None
    if setting == "console":
        return ConsoleSpanExporter()
    if setting.startswith("file:"):
        return JsonLinesExporter(Path(setting.removeprefix("file:").replace("{service}", service)))
    if setting == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    if setting == "otlp-grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise ContractError(
                "HANDRAIL_OTEL_EXPORTER=otlp-grpc needs `pip install opentelemetry-exporter-otlp-proto-grpc`"
            ) from None
        exporter: SpanExporter = GrpcExporter(endpoint=endpoint)
        return exporter
    raise ContractError(
        f"HANDRAIL_OTEL_EXPORTER={setting!r}: expected none, console, otlp-http, otlp-grpc or file:<path>"
    )


def setup_tracing(
    service: str, exporter: str = "none", endpoint: str = "http://127.0.0.1:4318"
) -> TracerProvider | None:
    """A tracer provider for ``service`` with the configured exporter behind a batch processor (None: ``off``)."""
    if exporter == "off":
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"handrail-{service}"}))
    chosen = _exporter(exporter, endpoint, service)
    if chosen is not None:
        provider.add_span_processor(BatchSpanProcessor(chosen))
    trace.set_tracer_provider(provider)
    return provider


@functools.cache
def tracer() -> trace.Tracer:
    """Handrail's tracer on the process's provider: made once (a proxy until the provider is set, which
    then hands over to it), since asking the provider for a tracer builds a new one on every call."""
    return trace.get_tracer(TRACER_NAME)


@contextlib.contextmanager
def consume_span(topic: str, group_id: str, key: str | None, headers: Sequence[tuple[str, bytes]]) -> Iterator[None]:
    """The span of processing one consumed message, a child of the trace its headers carry.

    What is published inside it carries this trace on (``Publisher`` injects the current context
    into the outgoing headers), so one task is one trace across services.
    """
    carrier = {name: value.decode("latin-1") for name, value in headers if name in _TRACE_HEADERS}
    parent = propagate.extract(carrier) if carrier else None
    attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group_id,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = key
    with tracer().start_as_current_span(
        f"{topic} process",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        # A failure is marked on the span, without formatting its traceback there: a retried
        # message would pay for that on every attempt, and the log has it once.
        record_exception=False,
    ) as span:
        try:
            yield
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__name__)
            raise


#: The W3C headers the propagator reads (``traceparent``, ``tracestate``) and baggage.
_TRACE_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})
