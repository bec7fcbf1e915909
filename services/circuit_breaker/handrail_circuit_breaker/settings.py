"""Circuit-breaker settings (``HANDRAIL_*``)."""

from __future__ import annotations

from pydantic import Field

from handrail.service import ServiceSettings
from handrail.state.controls import BreakerPolicy


class BreakerSettings(ServiceSettings):
    """When breakers open and for how long."""

    http_port: int = Field(default=8085, ge=0, le=65535)
    #: Open when at least half the calls in the window failed...
    breaker_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    #: ...and there were enough calls to judge: one failure in two calls is not a trend.
    breaker_min_calls: int = Field(default=5, ge=1)
    breaker_window_s: float = Field(default=60.0, gt=0)
    #: How long an open breaker short-circuits calls before one trial call is let through.
    breaker_cooldown_s: float = Field(default=30.0, gt=0)

    def policy(self) -> BreakerPolicy:
        return BreakerPolicy(
            failure_ratio=self.breaker_failure_ratio,
            min_calls=self.breaker_min_calls,
            window_s=self.breaker_window_s,
            cooldown_s=self.breaker_cooldown_s,
        )
