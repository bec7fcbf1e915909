"""Tracing (OpenTelemetry) for every service: one trace per task, GenAI span attributes."""

from handrail.observability.export import TracingConfig
from handrail.observability.jsonlines import JsonLinesExporter
from handrail.observability.tracing import setup_tracing, tracer

__all__ = ["JsonLinesExporter", "TracingConfig", "setup_tracing", "tracer"]
