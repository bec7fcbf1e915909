"""Handrail's exception root and the errors shared by every service.

Retryability belongs to the error, not to the ``except`` site: the consumer
pipeline (``handrail.bus.pipeline``) maps each class to one outcome.

    HandrailError                      root of everything Handrail raises on purpose
    ├── ContractError                  a config file (agents, workflows, tools) is invalid -> stop at start-up
    ├── TaskHalted                     a limit stops the task before the call that would break it -> result `halted`
    ├── RetryableError                 a dependency is down; the message is redelivered later, nothing is lost
    │   ├── StateUnavailable           Redis cannot be reached: fail closed, nothing runs unbudgeted
    │   ├── StateLost                  Redis answers but lost its state: nothing runs until it is rebuilt from Kafka
    │   └── BusUnavailable             Kafka did not take a message (down, restarting, no leader): tried again
    └── Rejected                       this message can never be processed -> dead letter (and a result)
        ├── MalformedMessage           not JSON, or JSON that fails the payload's schema
        │   ├── NotCanonical           a number RFC 8785 cannot encode (NaN, infinity, an integer past 2^53)
        │   └── TaskIdMismatch         the message key and the body name different tasks
        ├── InputRejected              a well-formed task the router refuses (size, workflow, caller)
        ├── HandoffError               an envelope failed verification: never processed on partial state
        │   ├── ContextHashMismatch    the context does not hash to ``context_hash`` (truncated or altered)
        │   ├── ParentHashMismatch     ``parent_hash`` is not the last hash committed for the task
        │   └── UnknownTask            no open task has this id
        ├── StepFailed                 the agent's step ended without a valid output
        ├── InternalError              a bug in a handler: parked with the exception, the task fails
        └── PoisonMessage              failed the same way ``poison_after_attempts`` times in a row
"""

from __future__ import annotations


class HandrailError(Exception):
    """Root of every error Handrail raises on purpose."""


class ContractError(HandrailError):
    """A contract file is invalid; raised at start-up, naming the file, the entry and the field."""


class TaskHalted(HandrailError):
    """The platform stops a task before a call that would break a limit: budget, deadline, loop, halt.

    Not a dead letter: the message was fine. The task ends ``halted`` with ``reason``.
    """

    def __init__(self, reason: str, *, error_type: str, task_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type
        self.task_id = task_id


class KafkaAdminError(HandrailError):
    """The broker refused an admin request: creating topics or ACLs (not allowed, authorizer off, ...)."""


class RetryableError(HandrailError):
    """A dependency is unavailable; the message is redelivered later and nothing is lost."""


class StateUnavailable(RetryableError):
    """Redis cannot be reached. The platform fails closed: no step runs without its state."""


class StateLost(RetryableError):
    """Redis answers but its generation marker is gone: it restarted empty or lost writes.

    Nothing runs on the forgotten state; a service rebuilds it from Kafka
    (``handrail.recovery``) and the message is tried again once it has.
    """


class BusUnavailable(RetryableError):
    """Kafka could not be reached or did not acknowledge a publish in time; the message is tried again."""


class Rejected(HandrailError):
    """The message can never be processed; it is dead-lettered with ``error_type`` and the reason."""

    error_type = "rejected"
    #: The task's final status when the rejection ends a task.
    task_status = "failed"

    def __init__(self, reason: str, *, task_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.task_id = task_id


class MalformedMessage(Rejected):
    """The bytes are not JSON, or the JSON does not match the payload's schema."""

    error_type = "malformed_message"
    task_status = "rejected"


class NotCanonical(MalformedMessage):
    """A value has a number RFC 8785 cannot encode, so it cannot be hashed: NaN, infinity, |n| > 2^53."""

    error_type = "invalid_number"


class TaskIdMismatch(MalformedMessage):
    """The message key and the body's ``task_id`` disagree (see ``handrail.bus.identity``)."""

    error_type = "task_id_mismatch"


class InputRejected(Rejected):
    """A well-formed task that the router refuses: too large, unknown workflow, caller not allowed."""

    task_status = "rejected"

    def __init__(self, reason: str, *, error_type: str, task_id: str | None = None) -> None:
        super().__init__(reason, task_id=task_id)
        self.error_type = error_type


class HandoffError(Rejected):
    """An envelope failed verification; it is never processed on partial state."""

    error_type = "handoff_failed"


class ContextHashMismatch(HandoffError):
    """The context does not hash to the envelope's ``context_hash``: truncated or altered in transit."""

    error_type = "context_hash_mismatch"


class ParentHashMismatch(HandoffError):
    """The envelope's ``parent_hash`` is not the last hash committed for its task."""

    error_type = "parent_hash_mismatch"


class UnknownTask(HandoffError):
    """No task with this id was ever opened by the router."""

    error_type = "unknown_task"


class StepFailed(Rejected):
    """The agent's step ended without an output that satisfies its contract."""

    error_type = "step_failed"


class InternalError(Rejected):
    """A handler raised something unexpected (a bug): the message is parked and its task ends ``failed``."""

    error_type = "internal_error"


class PoisonMessage(Rejected):
    """Processing failed the same way again and again: parked instead of redelivered forever."""

    error_type = "poison"
