"""Who may sign which handoff: the check a receiver makes after the signature is valid.

- A ``HandoffEnvelope`` (on ``agent.<name>``) is signed by the platform service
  that hands the step over: the router for a task's first step, the validator
  for every later one, and human review when a decision resumes a task; or by
  the operator key when an operator resumes or forks a task from its checkpoint
  (``handrail task resume|fork``). The envelope's ``sender`` must be that signer.
- A ``StepCompleted`` (on ``steps``) is signed by the agent the workflow binds
  to that step, and its ``agent`` must be that signer: one agent can never
  report another agent's step.
- An ``AuditRecord`` (on ``audit``) is signed by the process that appended it;
  :func:`audit_signers` says who may have, from the record's ``actor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from handrail.contracts import Contracts
from handrail.errors import ContractError, StepFailed
from handrail.signing.signatures import SIGNATURE_FIELD, Verifier

#: Service signer names; an agent may not be called like one of them.
ROUTER = "router"
VALIDATOR = "validator"
HUMAN_REVIEW = "human-review"
CIRCUIT_BREAKER = "circuit-breaker"
SERVICE_SIGNERS = frozenset({ROUTER, VALIDATOR, HUMAN_REVIEW, CIRCUIT_BREAKER})
#: Who signs what people do from the CLI (halts, autonomy changes): ``operator:<id>`` records.
OPERATOR = "operator"
#: Names no agent may have.
RESERVED_SIGNERS = SERVICE_SIGNERS | {OPERATOR}


class HandoffLike(Protocol):
    """What the policy reads from a ``HandoffEnvelope``."""

    @property
    def task_id(self) -> str: ...
    @property
    def step_index(self) -> int: ...
    @property
    def sender(self) -> str: ...


class StepReportLike(Protocol):
    """What the policy reads from a ``StepCompleted``."""

    @property
    def task_id(self) -> str: ...
    @property
    def workflow(self) -> str: ...
    @property
    def step(self) -> str: ...
    @property
    def agent(self) -> str: ...


def audit_signers(actor: str) -> frozenset[str]:
    """Who may have signed an audit record of ``actor``.

    No agent signs audit records: an agent's steps (``agent:<name>``) are recorded by the platform
    service that verified them (the validator), a service's decisions by that service (a worker's,
    ``service:worker-<agent>``, only in records older than the rule that agents write none), a
    reviewer's by human review, anything else (``operator:<id>``) by the operator key or a service.
    """
    kind, _, name = actor.partition(":")
    if kind == "agent":
        return SERVICE_SIGNERS
    if kind == "service":
        return frozenset({name.removeprefix("worker-")})
    if kind == "reviewer":
        return frozenset({HUMAN_REVIEW})
    return RESERVED_SIGNERS


def handoff_senders(step_index: int) -> frozenset[str]:
    """The services that may hand step ``step_index`` (0 = the first) to an agent."""
    # The operator: ``handrail task resume|fork`` hands a step on from a task's checkpoint.
    return (
        frozenset({ROUTER, HUMAN_REVIEW, OPERATOR})
        if step_index == 0
        else frozenset({VALIDATOR, HUMAN_REVIEW, OPERATOR})
    )


@dataclass(frozen=True)
class HandoffVerifier:
    """Signature plus signer policy, for the consumer pipeline.

    With ``required=False`` (a roll-out, while some senders do not sign yet) an
    unsigned message passes and the check returns None; a signed one is always
    verified in full, so a bad signature is never accepted.
    """

    verifier: Verifier
    contracts: Contracts
    required: bool = True

    def __post_init__(self) -> None:
        clash = RESERVED_SIGNERS & set(self.contracts.agents)
        if clash:
            raise ContractError(f"agents.yaml: agent names {sorted(clash)} are reserved for platform services")

    def check_handoff(self, envelope: HandoffLike, value: bytes) -> str | None:
        """Verify a consumed ``HandoffEnvelope``; return the signer (None: unsigned, and not required)."""
        if self._unsigned_allowed(envelope):
            return None
        return self.verifier.verify_bytes(
            value, expected=handoff_senders(envelope.step_index), claimed=envelope.sender, task_id=envelope.task_id
        )

    def check_step(self, report: StepReportLike, value: bytes) -> str | None:
        """Verify a consumed ``StepCompleted``: signed by the agent the workflow binds to the step."""
        if self._unsigned_allowed(report):
            return None
        return self.verifier.verify_bytes(
            value, expected=self.expected_agents(report), claimed=report.agent, task_id=report.task_id
        )

    def _unsigned_allowed(self, payload: object) -> bool:
        return not self.required and not getattr(payload, SIGNATURE_FIELD, None)

    def expected_agents(self, report: StepReportLike) -> set[str]:
        """The agent ``workflows.yaml`` binds to the report's step (for a subtask of a plan: the step's workers)."""
        workflow = self.contracts.workflows.get(report.workflow)
        spec = workflow.hop(report.step) if workflow is not None else None
        if spec is None:
            raise StepFailed(f"workflow {report.workflow!r} has no step {report.step!r}", task_id=report.task_id)
        return {spec.agent} if spec.agent is not None else set(spec.workers)
