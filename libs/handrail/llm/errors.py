"""What a model call can fail with; each error says whether the same model may be asked again.

Providers raise the ``ModelError`` family for one attempt; the model chain
(``handrail.llm.chain``) retries those that are ``retryable``, fails over to the
next model for the rest, and ends with one of the two ``Rejected`` errors, which
the consumer pipeline maps like any other: a chain that ran out of models is a
rejection (dead letter, replayable once the providers are back; the task fails),
an escalation halts the task for a person.

    HandrailError
    ├── ModelError                      one model call failed (``model``, ``provider``, ``retryable``)
    │   ├── ModelTransientError         worth another attempt on the same model, after a back-off
    │   │   ├── ModelTimeout            no complete response within the model's ``timeout_s``
    │   │   ├── ModelRateLimited        HTTP 429; ``retry_after_s`` is the wait the server asked for
    │   │   ├── ModelServerError        HTTP 5xx (and 408, 409, 529): the provider is struggling
    │   │   └── ModelConnectionError    could not connect, or the connection broke mid-response
    │   ├── ModelRequestRejected        another 4xx: bad key, unknown model, request too large -> next model
    │   ├── ModelResponseInvalid        a 2xx whose body is not the API's shape -> next model
    │   └── ModelUnavailable            the model's breaker is open: not called at all -> next model
    ├── Rejected (handrail.errors)
    │   └── ModelChainExhausted         every model of the chain failed: the step fails (``model_unavailable``)
    └── TaskHalted (handrail.errors)
        └── ModelEscalation             the primary failed and the agent escalates instead of falling back
                                        (``model_escalation``: the task ends ``halted`` for a person)
"""

from __future__ import annotations

from handrail.errors import HandrailError, Rejected, TaskHalted


class ModelError(HandrailError):
    """One model call failed. ``retryable`` says whether the same model may be asked again."""

    retryable = False
    #: A short machine-readable name for decision events and metrics.
    error_type = "model_error"

    def __init__(self, message: str, *, model: str, provider: str) -> None:
        super().__init__(f"{provider}/{model}: {message}")
        self.model = model
        self.provider = provider


class ModelTransientError(ModelError):
    """A failure that another attempt on the same model may not meet."""

    retryable = True
    error_type = "transient"


class ModelTimeout(ModelTransientError):
    """The model did not answer completely within its ``timeout_s``."""

    error_type = "timeout"


class ModelRateLimited(ModelTransientError):
    """HTTP 429. ``retry_after_s`` is what the server asked us to wait (None when it did not say)."""

    error_type = "rate_limited"

    def __init__(self, message: str, *, model: str, provider: str, retry_after_s: float | None) -> None:
        super().__init__(message, model=model, provider=provider)
        self.retry_after_s = retry_after_s


class ModelServerError(ModelTransientError):
    """HTTP 5xx (or 408 / 409 / Anthropic's 529 "overloaded"): the provider's side failed."""

    error_type = "server_error"

    def __init__(self, message: str, *, model: str, provider: str, status: int) -> None:
        super().__init__(message, model=model, provider=provider)
        self.status = status


class ModelConnectionError(ModelTransientError):
    """The connection could not be made, or broke before the response was complete."""

    error_type = "connection_error"


class ModelRequestRejected(ModelError):
    """Another 4xx: the request itself is refused (key, model name, size). Asking again will not help."""

    error_type = "request_rejected"

    def __init__(self, message: str, *, model: str, provider: str, status: int) -> None:
        super().__init__(message, model=model, provider=provider)
        self.status = status


class ModelResponseInvalid(ModelError):
    """A successful status whose body is not the API's response shape."""

    error_type = "invalid_response"


class ModelUnavailable(ModelError):
    """The model's breaker is open: the chain did not call it."""

    error_type = "breaker_open"


class ModelChainExhausted(Rejected):
    """Every model of the agent's chain failed or was unavailable; the step cannot get an answer."""

    error_type = "model_unavailable"


class ModelEscalation(TaskHalted):
    """The primary model failed and the agent is configured to escalate to a person, not fall back."""

    def __init__(self, reason: str, *, task_id: str | None = None) -> None:
        super().__init__(reason, error_type="model_escalation", task_id=task_id)
