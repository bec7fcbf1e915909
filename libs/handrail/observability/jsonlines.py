"""Spans as JSON lines in a file: offline debugging, benchmarks and tests (``HANDRAIL_OTEL_EXPORTER=file:<path>``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from handrail import jsontext


class JsonLinesExporter(SpanExporter):
    """Appends each finished span as one JSON line (OpenTelemetry's own JSON form) to a file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = b"".join(jsontext.dumps(_as_json(span)) + b"\n" for span in spans)
        with self._lock, self._path.open("ab") as out:
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
