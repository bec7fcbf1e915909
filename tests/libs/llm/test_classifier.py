"""The router's workflow classifier: a cheap model, a confidence floor, and a safe way otherwise."""

from __future__ import annotations

import httpx
import pytest
from tests.fixtures.model_server import FakeModelServer, answer, status, text
from tests.libs.llm.support import provider_for, spec_for

from handrail.errors import ContractError
from handrail.llm import ModelReply, ModelRequest
from handrail.llm.chain import ChainLink, ModelChain
from handrail.llm.classifier import BelowFloor, ClassifierSpec, WorkflowClassifier
from handrail.llm.errors import ModelServerError
from handrail.llm.retry import RetryPolicy

WORKFLOWS = {"expense-approval": "approve an expense claim", "travel-booking": "book travel"}
CLAIM = {"employee_id": "E100", "amount": 120, "currency": "EUR", "description": "lunch"}


class Canned:
    """A provider that answers with one fixed reply (or raises), and keeps the request."""

    name = "canned"

    def __init__(self, reply: ModelReply | Exception) -> None:
        self.reply = reply
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def said(answer_: dict[str, object] | None, error: str | None = None) -> ModelReply:
    return ModelReply(provider="canned", model="cheap", answer=answer_, answer_error=error, input_tokens=50)


def classifier(provider: object, **spec: object) -> WorkflowClassifier:
    body = {"model_chain": ["cheap"], "confidence_floor": 0.8, **spec}
    return WorkflowClassifier(provider, ClassifierSpec.model_validate(body), WORKFLOWS)  # type: ignore[arg-type]


async def test_a_confident_answer_routes_to_the_workflow() -> None:
    provider = Canned(said({"workflow": "expense-approval", "confidence": 0.93, "reason": "a claim"}))
    routing = await classifier(provider).classify(CLAIM, hint="expenses")
    assert (routing.route, routing.workflow, routing.confidence) == ("workflow", "expense-approval", 0.93)
    assert routing.reason == "a claim" and routing.input_tokens == 50
    system, user = provider.requests[0].messages
    assert "- expense-approval: approve an expense claim" in system.content
    assert '"hint": "expenses"' in user.content and '"employee_id": "E100"' in user.content


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (said({"workflow": "expense-approval", "confidence": 0.5}), "below the floor 0.80"),
        (said({"workflow": "payroll", "confidence": 0.99}), "no known workflow ('payroll')"),
        (said({"workflow": None, "confidence": 0.9}), "no known workflow (None)"),
        (said({"workflow": "expense-approval"}), "no confidence"),
        (said({"workflow": "expense-approval", "confidence": True}), "no confidence"),
        (said(None, "the reply was empty"), "unusable: the reply was empty"),
        (ModelServerError("down", model="cheap", provider="canned", status=503), "model was unavailable"),
    ],
)
async def test_anything_but_a_confident_known_answer_goes_to_review(reply: object, reason: str) -> None:
    routing = await classifier(Canned(reply)).classify(CLAIM)  # type: ignore[arg-type]
    assert routing.route == "review" and routing.workflow is None
    assert reason in routing.reason


async def test_below_the_floor_can_route_to_a_default_workflow_keeping_the_proposal() -> None:
    provider = Canned(said({"workflow": "travel-booking", "confidence": 0.4}))
    routing = await classifier(provider, below_floor="default", default_workflow="expense-approval").classify(CLAIM)
    assert (routing.route, routing.workflow, routing.proposed) == ("default", "expense-approval", "travel-booking")


def test_the_default_workflow_must_exist_and_be_given() -> None:
    with pytest.raises(ValueError, match="default_workflow"):
        ClassifierSpec(model_chain=["cheap"], below_floor=BelowFloor.DEFAULT)
    with pytest.raises(ContractError, match="unknown workflow 'nope'"):
        classifier(Canned(said({})), below_floor="default", default_workflow="nope")


async def test_classifying_over_http_with_a_cheap_model_and_a_fallback(
    model_server: FakeModelServer, http_client: httpx.AsyncClient
) -> None:
    retry = RetryPolicy(max_attempts=1)
    chain = ModelChain(
        [
            ChainLink("cheap", provider_for(spec_for(model_server, "openai", "cheap"), http_client), retry),
            ChainLink("backup", provider_for(spec_for(model_server, "anthropic", "backup"), http_client), retry),
        ]
    )
    model_server.script("cheap", status(500), text("It is probably an expense claim."))
    model_server.script("backup", answer({"workflow": "expense-approval", "confidence": 0.97}))
    routing = await classifier(chain).classify(CLAIM)
    assert (routing.route, routing.workflow, routing.model) == ("workflow", "expense-approval", "backup")
    # Next call: the cheap model answers in prose, which is not a usable classification.
    routing = await classifier(chain).classify(CLAIM)
    assert routing.route == "review" and "not valid JSON" in routing.reason
