"""Setting up OpenTelemetry tracing for a service.

Spans are batched (``BatchSpanProcessor``): nothing is flushed on the hot path. Where they go is
``HANDRAIL_OTEL_EXPORTER`` or, when that is unset, the standard ``OTEL_*`` variables
(``handrail.observability.export`` has the rules).

W3C trace context travels in Kafka headers (``Publisher`` injects the current one on
publish, ``consume_span`` picks it up on consume), so one task is one trace across every
service it passes through. There is no span per published message: a message's consume
span is the child of the span that published it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from types import TracebackType

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from handrail.observability.export import TracingConfig, resource, span_exporters

#: The instrumentation scope of Handrail's own spans.
TRACER_NAME = "handrail"


def setup_tracing(service: str, config: TracingConfig | None = None) -> TracerProvider | None:
    """The process's tracer provider for ``service``, each configured exporter behind a batch processor.

    None for ``HANDRAIL_OTEL_EXPORTER=off``: no spans and no trace context at all. A bad setting is a
    ``ContractError``, raised before anything is set up.
    """
    config = config or TracingConfig()
    exporters = span_exporters(config, service)
    if config.exporter == "off":
        return None
    provider = TracerProvider(resource=resource(config, service))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


@functools.cache
def tracer() -> trace.Tracer:
    """Handrail's tracer on the process's provider: made once (a proxy until the provider is set, which
    then hands over to it), since asking the provider for a tracer builds a new one on every call."""
    return trace.get_tracer(TRACER_NAME)


def consume_span(
    topic: str, group_id: str, key: str | None, headers: Sequence[tuple[str, bytes]]
) -> contextlib.AbstractContextManager[None]:
    """The span of processing one consumed message, a child of the trace its headers carry.

    What is published inside it carries this trace on (``Publisher`` injects the current context
    into the outgoing headers), so one task is one trace across services.
    """
    carrier = {name: value.decode("latin-1") for name, value in headers if name in _TRACE_HEADERS}
    attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group_id,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = key
    return _ConsumeSpan(f"{topic} process", propagate.extract(carrier) if carrier else None, attributes)


class _ConsumeSpan:
    """``start_as_current_span`` for the hot path, without its layers of generator context managers: the
    span is current inside, marked with ``error.type`` and an error status when the processing raises
    (its traceback is not formatted onto the span: a retried message would pay for that on every attempt,
    and the log has it once), and ended on the way out."""

    __slots__ = ("_attributes", "_name", "_parent", "_span", "_token")

    def __init__(self, name: str, parent: Context | None, attributes: dict[str, str]) -> None:
        self._name, self._parent, self._attributes = name, parent, attributes

    def __enter__(self) -> None:
        self._span = tracer().start_span(
            self._name, context=self._parent, kind=trace.SpanKind.CONSUMER, attributes=self._attributes
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc is not None:
                if isinstance(exc, Exception):
                    self._span.set_attribute("error.type", type(exc).__name__)
                self._span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            otel_context.detach(self._token)
            self._span.end()


#: The W3C headers the propagator reads (``traceparent``, ``tracestate``) and baggage.
_TRACE_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})
