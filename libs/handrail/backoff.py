"""Back-off between attempts: how many, and how long to wait before the next one.

One home for the arithmetic every retry in Handrail uses - a model call
(``handrail.llm.retry.RetryPolicy`` adds ``Retry-After``) and a tool call
(``handrail.contracts.tools.ToolPolicy``). Whether a failure is worth another
attempt is the error's business, never this module's.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off: the ``n``-th wait is at most ``base_delay_s * 2**(n-1)``, capped at ``max_delay_s``.

    With ``jitter`` (the default) the wait is drawn uniformly below that ceiling ("full jitter"), so
    replicas that failed together do not come back together; without it, the wait is the ceiling.
    """

    #: Attempts in all, the first included (1 = no retries).
    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    #: Time spent, waits included, after which no new attempt starts.
    max_total_s: float = math.inf
    jitter: bool = True
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.base_delay_s, self.max_delay_s, self.max_total_s) < 0:
            raise ValueError("delays must not be negative")

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return self.rng.uniform(0, ceiling) if self.jitter else ceiling

    def next_delay_s(self, attempt: int, elapsed_s: float) -> float | None:
        """How long to wait before attempt ``attempt + 1``; None when the attempts or the time are used up."""
        if attempt >= self.max_attempts:
            return None
        delay_s = self.backoff_s(attempt)
        return None if elapsed_s + delay_s > self.max_total_s else delay_s
