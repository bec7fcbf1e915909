"""Bounded label values: a label fed from message content takes only values known in advance.

Known are the workflows, agents and tools the loaded contracts declare and the models of the
catalogue (``declare``, at start-up), and the fixed error types below; anything else counts as
``unknown``. A submitter's typo, a model's invented tool name or a forged event then cannot mint
a time series: every label's values stay a small set, whatever arrives on the bus.

Every ``.labels(...)`` call that takes a value from a message passes it through one of these.
Values the code itself chooses (a service's name, an outcome it sets) need no bounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

#: The value of every label whose real value is not known in advance.
UNKNOWN = "unknown"

#: Every ``error_type`` Handrail sets (the error classes' and the limits'): dead letters, halts, handoffs.
#: A test checks the code names no other; one missing here would only be counted as unknown.
ERROR_TYPES = frozenset(
    {
        # the message or the hop (handrail.errors, handrail.signing.errors)
        "malformed_message",
        "invalid_number",
        "task_id_mismatch",
        "rejected",
        "handoff_failed",
        "context_hash_mismatch",
        "parent_hash_mismatch",
        "unknown_task",
        "step_failed",
        "internal_error",
        "poison",
        "signature_rejected",
        "signature_missing",
        "signature_invalid",
        "unknown_signer",
        "wrong_signer",
        # the router's refusals
        "unknown_workflow",
        "task_too_large",
        "submitter_not_allowed",
        "invalid_input",
        # the step (validator, worker)
        "output_schema_violation",
        "evaluation_exhausted",
        "vote_disagreement",
        "plan_rejected",
        "branch_quorum_missed",
        "prompt_render_failed",
        "side_effect_in_doubt",
        "too_many_corrections",
        "turns_exhausted",
        "review_rejected",
        "approval_required",
        # the limits (halts)
        "halted",
        "halted_by_operator",
        "budget_exhausted",
        "deadline_exceeded",
        "loop_detected",
        "agent_breaker_open",
        "tool_breaker_open",
        "breaker_open",
        "behaviour_deviation",
        # prompt assembly (handrail.context)
        "context_over_cap",
        "compaction_failed",
        # tool calls (handrail.tools.kinds, handrail.tools.observations)
        "tool_failed",
        "invalid_result",
        "tool_transient",
        "tool_timeout",
        "tool_invalid_input",
        "tool_permanent",
        "tool_auth",
        "tool_permanent_failure",
        "tool_auth_failed",
        "observation_denied",
        # model calls (handrail.llm.errors)
        "model_error",
        "model_escalation",
        "model_unavailable",
        "transient",
        "timeout",
        "rate_limited",
        "server_error",
        "connection_error",
        "request_rejected",
        "invalid_response",
    }
)


@dataclass(frozen=True)
class Known:
    """The names a label may take besides ``unknown``."""

    workflows: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    tools: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()


_known = Known()


def known() -> Known:
    """What is declared now."""
    return _known


def declare(
    *,
    workflows: Iterable[str] = (),
    agents: Iterable[str] = (),
    tools: Iterable[str] = (),
    models: Iterable[str] = (),
) -> Known:
    """Declare the contracts' names (at start-up), replacing what was declared; returns what was before."""
    global _known
    before = _known
    _known = Known(frozenset(workflows), frozenset(agents), frozenset(tools), frozenset(models))
    return before


def declare_models(names: Iterable[str]) -> None:
    """Add the model catalogue's names (a worker loads it after the contracts)."""
    global _known
    _known = replace(_known, models=_known.models | frozenset(names))


def restore(previous: Known) -> None:
    """Put back what ``declare`` returned (tests)."""
    global _known
    _known = previous


def one_of(value: str | None, allowed: frozenset[str]) -> str:
    """``value`` if it is in ``allowed``, else ``unknown``."""
    return value if value is not None and value in allowed else UNKNOWN


def workflow(name: str | None) -> str:
    """A workflow the contracts declare, or ``unknown``."""
    return one_of(name, _known.workflows)


def agent(name: str | None) -> str:
    """An agent the contracts declare, or ``unknown``."""
    return one_of(name, _known.agents)


def tool(name: str | None) -> str:
    """A tool of the registry, or ``unknown`` (a model may call a tool that does not exist)."""
    return one_of(name, _known.tools)


def model(name: str | None) -> str:
    """A model of the catalogue or of an agent's chain, or ``unknown``."""
    return one_of(name, _known.models)


def error_type(value: str | None) -> str:
    """One of ``ERROR_TYPES``, or ``unknown``."""
    return one_of(value, ERROR_TYPES)


def scoped(scope: str, name: str | None) -> str:
    """A breaker's name, bounded by its scope (``agent``, ``tool`` or ``model``)."""
    bound = {"agent": agent, "tool": tool, "model": model}.get(scope)
    return bound(name) if bound is not None else UNKNOWN


def call(kind: str, name: str | None) -> str:
    """The name of a model call (a model) or a tool call (a tool)."""
    return model(name) if kind == "model_call" else tool(name)
