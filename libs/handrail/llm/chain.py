"""``ModelChain``: an agent's models in order, with retries, breakers and failover.

For each model, primary first: skip it while its breaker is open; otherwise
try it up to its retry policy's bound, waiting the policy's back-off (or the
server's ``Retry-After``) between retryable failures. A model that keeps
failing hands over to the next one; when none is left the chain raises
``ModelChainExhausted``. An agent that must not fall back (a high-stakes step)
gets ``ModelEscalation`` as soon as its primary model is given up on.

Every attempt, retries included, goes through the observers (budget,
decision events, spans) and is listed on the reply's ``attempts``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from handrail.llm.base import Attempt, ModelProvider, ModelReply, ModelRequest
from handrail.llm.breaker import BreakerBoard, InMemoryBreakerBoard
from handrail.llm.errors import ModelChainExhausted, ModelError, ModelEscalation
from handrail.llm.observers import AttemptObserver, Outcome, active_observers
from handrail.llm.retry import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainLink:
    """One model of a chain: its catalogue name, the provider that serves it, its retry policy."""

    model: str
    provider: ModelProvider
    retry: RetryPolicy


class ModelChain:
    """Implements ``ModelProvider`` over an agent's model chain."""

    name = "chain"

    def __init__(
        self,
        links: Sequence[ChainLink],
        *,
        breakers: BreakerBoard | None = None,
        observers: Sequence[AttemptObserver] = (),
        escalate_instead_of_fallback: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not links:
            raise ValueError("a model chain needs at least one model")
        self.links = tuple(links)
        self.breakers: BreakerBoard = breakers or InMemoryBreakerBoard()
        self.observers = tuple(observers)
        self.escalate_instead_of_fallback = escalate_instead_of_fallback
        self.sleep = sleep

    @property
    def models(self) -> list[str]:
        """The chain's model names, primary first."""
        return [link.model for link in self.links]

    async def complete(self, request: ModelRequest) -> ModelReply:
        """The first usable reply along the chain."""
        call = _Call(self, request, (*self.observers, *active_observers()))
        for index, link in enumerate(self.links):
            if index > 0 and self.escalate_instead_of_fallback:
                raise ModelEscalation(
                    f"model {self.links[0].model!r} failed ({call.failures[-1]}); this agent escalates to a "
                    f"person instead of falling back to {link.model!r}"
                )
            if not await self.breakers.allow(link.model):
                call.failures.append(f"{link.model}: breaker open")
                log.info("model %s skipped: its breaker is open", link.model)
                continue
            reply = await call.try_link(link)
            if reply is not None:
                return dataclasses.replace(reply, attempts=tuple(call.attempts))
        raise ModelChainExhausted(f"no model of the chain {self.models} answered: " + "; ".join(call.failures))

    async def aclose(self) -> None:
        """Close the providers that hold connections."""
        for link in self.links:
            close = getattr(link.provider, "aclose", None)
            if close is not None:
                await close()


class _Call:
    """The attempts of one ``complete`` call along the chain."""

    def __init__(self, chain: ModelChain, request: ModelRequest, observers: tuple[AttemptObserver, ...]) -> None:
        self.chain = chain
        self.sleep = chain.sleep
        self.request = request
        self.observers = observers
        self.attempts: list[Attempt] = []
        self.failures: list[str] = []

    async def try_link(self, link: ChainLink) -> ModelReply | None:
        """Attempt ``link`` until it answers (the reply) or is given up on (None)."""
        request = dataclasses.replace(self.request, model=link.model)
        provider_name = getattr(link.provider, "name", "unknown")
        began_model = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1 and not await self.chain.breakers.allow(link.model):
                self.failures.append(f"{link.model}: breaker opened after {attempt - 1} attempts")
                return None
            observed = await self._before(link.model)
            started = time.perf_counter()
            try:
                reply = await link.provider.complete(request)
            except ModelError as exc:
                latency_ms = _ms_since(started)
                delay_s = link.retry.delay_s(attempt, exc, time.monotonic() - began_model)
                outcome: Outcome = "retry" if delay_s is not None else "error"
                await self.chain.breakers.record(link.model, False)
                await self._after(observed, Attempt(link.model, exc.provider, outcome, exc.error_type, latency_ms))
                log.warning("model %s attempt %d failed (%s): %s", link.model, attempt, outcome, exc)
                if delay_s is None:
                    self.failures.append(f"{link.model}: {exc.error_type} after {attempt} attempt(s): {exc}")
                    return None
                await self.sleep(delay_s)
                continue
            except BaseException as exc:  # a bug, a cancellation, a scripted plan run out: not the model's health
                failed = Attempt(link.model, provider_name, "error", type(exc).__name__, _ms_since(started))
                await self._after(observed, failed)
                raise
            await self.chain.breakers.record(link.model, True)
            record = Attempt(
                link.model,
                reply.provider,
                "ok",
                None,
                _ms_since(started),
                reply.input_tokens,
                reply.output_tokens,
                reply.cost_usd,
            )
            await self._after(observed, record)
            return reply

    async def _before(self, model: str) -> list[AttemptObserver]:
        """Call ``before_attempt`` in order; if one raises, close those that began, then re-raise."""
        began: list[AttemptObserver] = []
        for observer in self.observers:
            try:
                await observer.before_attempt(model)
            except BaseException as exc:
                stopped = Attempt(model, "none", "error", f"stopped:{type(exc).__name__}", 0.0)
                await self._after(began, stopped, record=False)
                raise
            began.append(observer)
        return began

    async def _after(self, observers: list[AttemptObserver], attempt: Attempt, record: bool = True) -> None:
        if record:
            self.attempts.append(attempt)
        for observer in observers:
            await observer.after_attempt(
                attempt.model,
                attempt.provider,
                attempt.outcome,
                attempt.error_type,
                attempt.latency_ms,
                attempt.input_tokens,
                attempt.output_tokens,
                attempt.cost_usd,
            )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def as_chain(provider: ModelProvider, model: str) -> ModelChain:
    """``provider`` as a chain: itself when it is one, else a chain of just ``model`` with no retries.

    Lets a runner treat every provider alike (attempts, observers) while a lone
    provider, the scripted one say, behaves exactly as it does on its own.
    """
    if isinstance(provider, ModelChain):
        return provider
    return ModelChain([ChainLink(model, provider, RetryPolicy(max_attempts=1))])
