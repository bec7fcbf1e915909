"""Declarative contracts from ``config/``: agents, workflows, and loading them.

Everything is validated at start-up; a bad file stops the service with a
message naming the file, the entry and the field.
"""

from handrail.contracts.agents import AgentSpec, Autonomy, Baseline, CanaryRule, Limits, Shadow
from handrail.contracts.expressions import ExpressionError, evaluate
from handrail.contracts.graduation import GraduationRule
from handrail.contracts.loader import Contracts, load_contracts
from handrail.contracts.workflows import (
    DefaultAction,
    EscalationRule,
    EvaluationRule,
    EvaluatorSpec,
    Exhausted,
    ReviewPolicy,
    StepSpec,
    WorkflowSpec,
)

__all__ = [
    "AgentSpec",
    "Autonomy",
    "Baseline",
    "CanaryRule",
    "Contracts",
    "DefaultAction",
    "EscalationRule",
    "EvaluationRule",
    "EvaluatorSpec",
    "Exhausted",
    "ExpressionError",
    "GraduationRule",
    "Limits",
    "ReviewPolicy",
    "Shadow",
    "StepSpec",
    "WorkflowSpec",
    "evaluate",
    "load_contracts",
]
