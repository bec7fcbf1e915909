"""Tracing (OpenTelemetry) for every service: one trace per task, GenAI span attributes."""

from handrail.observability.tracing import JsonLinesExporter, setup_tracing, tracer

__all__ = ["JsonLinesExporter", "setup_tracing", "tracer"]
