"""Choosing a task's workflow: the one it names, or for ``auto`` a rule, else the classifier.

A task naming a workflow is taken at its word (no model call; the handler
still refuses unknown names). ``auto`` goes through ``config/routing.yaml``:
the first matching rule, else the classifier (a cheap model under a
confidence floor). When the classifier is not sure, cannot be understood, is
down or too slow, the task takes the configured safe way: the default
workflow, or review. Without a routing file, or without a rule that matches
and a classifier to ask, ``auto`` is refused as ``unknown_workflow``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

import httpx
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, SecretStr

from handrail.contracts import WorkflowSpec
from handrail.contracts.routing import AUTO, RoutingConfig, load_routing
from handrail.errors import InputRejected
from handrail.llm.classifier import BelowFloor, Routing, WorkflowClassifier
from handrail.llm.factory import build_chain
from handrail.llm.models import load_catalogue
from handrail.messages import TaskSubmitted
from handrail.metrics import labels

log = logging.getLogger(__name__)

#: The metadata field whose string value is passed to the classifier as the submitter's hint.
HINT_FIELD = "routing_hint"

ROUTES = Counter(
    "handrail_router_routes_total",
    "Tasks given a workflow, by how it was chosen (named, rule, model, default, review).",
    ["kind", "workflow"],
)


class RouteKind(StrEnum):
    """How the task's workflow was chosen."""

    NAMED = "named"  # the task named it
    RULE = "rule"  # a rule of routing.yaml matched
    MODEL = "model"  # the classifier was sure enough
    DEFAULT = "default"  # the classifier was not: the configured default workflow
    REVIEW = "review"  # the classifier was not: a person must choose


class RouteDecision(BaseModel):
    """The workflow a task runs (``None`` for review) and why; recorded in ``task.opened`` as ``routing``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RouteKind
    workflow: str | None
    reason: str
    rule: str | None = None
    model: str | None = None
    proposed: str | None = None
    confidence: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        """Tokens the classifier used."""
        return self.input_tokens + self.output_tokens

    def details(self) -> dict[str, object]:
        """The audit record's ``routing``."""
        return self.model_dump(mode="json", exclude_none=True)

    def describe(self) -> str:
        """How the workflow was chosen, for a person."""
        if self.kind == RouteKind.RULE:
            return f"routed by rule {self.rule!r}"
        if self.kind == RouteKind.MODEL:
            return f"chosen by the classifier with confidence {self.confidence:.2f}"
        if self.kind == RouteKind.DEFAULT:
            return f"the default workflow, because {self.reason}"
        if self.kind == RouteKind.REVIEW:
            return f"left for review, because {self.reason}"
        return "named by the submitter"

    @classmethod
    def from_classifier(cls, routing: Routing) -> RouteDecision:
        """The decision for the classifier's ``routing``."""
        kind = {"workflow": RouteKind.MODEL, "default": RouteKind.DEFAULT, "review": RouteKind.REVIEW}[routing.route]
        return cls(
            kind=kind,
            workflow=routing.workflow,
            reason=routing.reason,
            model=routing.model,
            proposed=routing.proposed,
            confidence=routing.confidence,
            input_tokens=routing.input_tokens,
            output_tokens=routing.output_tokens,
            cost_usd=routing.cost_usd,
        )


class TaskRouter:
    """Decides each task's workflow under ``config`` (``None``: no routing.yaml)."""

    def __init__(
        self, config: RoutingConfig | None, classifier: WorkflowClassifier | None, *, timeout_s: float
    ) -> None:
        self.config = config
        self.classifier = classifier
        self.timeout_s = timeout_s

    async def route(self, task: TaskSubmitted) -> RouteDecision:
        """The route for ``task``, or ``InputRejected`` (``unknown_workflow``) when ``auto`` cannot be routed."""
        if task.workflow != AUTO:
            return RouteDecision(kind=RouteKind.NAMED, workflow=task.workflow, reason="named by the submitter")
        if self.config is None:
            raise _unroutable(task, "routing is not configured (there is no routing.yaml)")
        rule = self.config.rule_for(task.input)
        if rule is not None:
            decision = RouteDecision(
                kind=RouteKind.RULE, workflow=rule.workflow, rule=rule.name, reason=f"rule {rule.name!r} matched"
            )
        elif self.classifier is None:
            raise _unroutable(task, f"no routing rule matched and {self.config.source} configures no classifier")
        else:
            decision = await self._classify(self.classifier, task)
        log.info("task %s routed: %s -> %s (%s)", task.task_id, decision.kind, decision.workflow, decision.reason)
        ROUTES.labels(decision.kind.value, labels.workflow(decision.workflow) if decision.workflow else "").inc()
        return decision

    async def _classify(self, classifier: WorkflowClassifier, task: TaskSubmitted) -> RouteDecision:
        hint = task.metadata.get(HINT_FIELD)
        try:
            async with asyncio.timeout(self.timeout_s):
                routing = await classifier.classify(task.input, hint if isinstance(hint, str) else None)
        except TimeoutError:
            # A slow chain (retries, back-off, failover) must not hold the task partition: the safe way now.
            spec = classifier.spec
            reason = f"the classifier did not answer within {self.timeout_s:g} s"
            if spec.below_floor == BelowFloor.DEFAULT:
                return RouteDecision(kind=RouteKind.DEFAULT, workflow=spec.default_workflow, reason=reason)
            return RouteDecision(kind=RouteKind.REVIEW, workflow=None, reason=reason)
        return RouteDecision.from_classifier(routing)


def load_task_router(
    config_dir: Path,
    workflows: Mapping[str, WorkflowSpec],
    *,
    timeout_s: float,
    http_client: httpx.AsyncClient | None = None,
    api_keys: Mapping[str, SecretStr] | None = None,
) -> TaskRouter:
    """The router for ``config_dir/routing.yaml``, its classifier's chain built from ``models.yaml``.

    Fails with ``ContractError`` on a bad file, an unknown workflow or model, or a missing API key.
    """
    config = load_routing(config_dir, workflows)
    if config is None or config.classifier is None:
        return TaskRouter(config, None, timeout_s=timeout_s)
    chain = build_chain(
        config.classifier.model_chain,
        load_catalogue(config_dir),
        user="classifier",
        source=config.source,
        api_keys=api_keys,
        http_client=http_client,
    )
    descriptions = {name: spec.description for name, spec in workflows.items()}
    return TaskRouter(config, WorkflowClassifier(chain, config.classifier, descriptions), timeout_s=timeout_s)


def _unroutable(task: TaskSubmitted, why: str) -> InputRejected:
    return InputRejected(
        f"workflow {AUTO!r} asks the router to choose one, but {why}",
        error_type="unknown_workflow",
        task_id=task.task_id,
    )
