"""Who hears about every model attempt: budgets, decision events, spans.

``AttemptObserver`` is called around each attempt a model chain makes,
retries included: ``before_attempt`` first (it may raise to stop the call:
that is where a budget reservation goes), ``after_attempt`` once the attempt
ended (where the budget settles and the decision event and span are
recorded). Every ``before_attempt`` that returned is matched by exactly one
``after_attempt``.

A chain has observers of its own (built once per process) and those active in
the current asyncio context (``with observing(...)``), so a worker can bind
per-step observers (the task's budget) without rebuilding its provider.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, Protocol

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

Outcome = Literal["ok", "error", "retry"]


class AttemptObserver(Protocol):
    """Hooks around one attempt at a model call."""

    async def before_attempt(self, model: str) -> None:
        """Called before the request goes out; raising stops the call (and the chain)."""
        ...

    async def after_attempt(
        self,
        model: str,
        provider: str,
        outcome: Outcome,
        error_type: str | None,
        latency_ms: float,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None:
        """Called once the attempt ended: ``retry`` means another attempt on ``model`` follows."""
        ...


_ACTIVE: ContextVar[tuple[AttemptObserver, ...]] = ContextVar("handrail_attempt_observers", default=())


@contextmanager
def observing(*observers: AttemptObserver) -> Iterator[None]:
    """Add ``observers`` to every model chain call made in this context (nests; task-local)."""
    token = _ACTIVE.set((*_ACTIVE.get(), *observers))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_observers() -> tuple[AttemptObserver, ...]:
    """The observers bound by ``observing`` in the current context."""
    return _ACTIVE.get()


@functools.cache
def _llm_tracer() -> Tracer:
    """The model calls' tracer, made once (see ``handrail.observability.tracing.tracer``: asking the provider
    builds a new one each time)."""
    return trace.get_tracer("handrail.llm")


class TracingObserver:
    """One OpenTelemetry span per attempt, with the GenAI semantic-convention attributes.

    ``attributes`` are added to every span: the prompt version in use
    (``handrail.prompt``), the task id, the step.
    """

    def __init__(self, attributes: Mapping[str, str | int | float] | None = None, tracer: Tracer | None = None) -> None:
        self._tracer = tracer or _llm_tracer()
        self._attributes = dict(attributes or {})
        self._open: list[Span] = []

    async def before_attempt(self, model: str) -> None:
        span = self._tracer.start_span(
            f"chat {model}",
            kind=trace.SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": model, **self._attributes},
        )
        self._open.append(span)

    async def after_attempt(
        self,
        model: str,
        provider: str,
        outcome: Outcome,
        error_type: str | None,
        latency_ms: float,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None:
        if not self._open:
            return
        span = self._open.pop()
        span.set_attributes(
            {
                "gen_ai.provider.name": provider,
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": output_tokens,
                "handrail.cost_usd": cost_usd,
                "handrail.attempt.outcome": outcome,
            }
        )
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()
