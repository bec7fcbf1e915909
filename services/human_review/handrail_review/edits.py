"""What a reviewer may change approving a review, checked before anything is recorded (a refusal changes nothing).

- An **edit** of the checkpoint's context must apply (a JSON Patch, or the whole new
  context), stay within ``max_edit_bytes`` (it travels on in a Kafka record), keep the
  context's contract — the workflow's input schema, each finished step's output schema,
  no finished step removed — and leave the workflow's ``locked_fields`` alone.
- An edit of a **proposed call** changes its arguments, which must satisfy the tool's
  argument schema: what a person approves is what runs.
- A **top-up** goes with approving a halt, within the workflow's ``max_top_up`` (all
  the task's top-ups together) and the approving role's bound per approval.
"""

from __future__ import annotations

from typing import Any

import jsonpatch

from handrail.contracts import Contracts, WorkflowSpec, documents
from handrail.hashing import canonical_json, context_hash
from handrail.messages import BudgetTopUp, ReviewRequested
from handrail.patch import diff
from handrail.state.budgets import BudgetStore
from handrail.tools import ToolRegistry
from handrail.topups import amounts, beyond_the_workflow, granted_so_far
from handrail_review.errors import InvalidEdit, InvalidTopUp, NotAllowed, TooLarge
from handrail_review.reviewers import Directory

#: What an edit is: its JSON Patch against the checkpoint, and the edited document's hash ("" when none).
Edit = tuple[list[dict[str, Any]] | None, str]


class EditRules:
    """Checks edits and top-ups against the contracts, the tools, the reviewers' roles and the task's budget."""

    def __init__(
        self, contracts: Contracts, tools: ToolRegistry, directory: Directory, budgets: BudgetStore, max_edit_bytes: int
    ) -> None:
        self.contracts = contracts
        self.tools = tools
        self.directory = directory
        self.budgets = budgets
        self.max_edit_bytes = max_edit_bytes

    def edit(
        self, request: ReviewRequested, context: dict[str, Any] | None, patch: list[dict[str, Any]] | None
    ) -> Edit:
        """The edit's JSON Patch against the checkpoint and the edited document's hash; ``(None, "")`` for none."""
        if context is None and patch is None:
            return None, ""
        proposal = request.proposal
        what = "the checkpoint's context" if proposal is None else f"the arguments of the call to {proposal.tool}"
        base = request.context if proposal is None else proposal.arguments
        if patch is not None:
            try:
                context = jsonpatch.apply_patch(base, patch, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
                raise InvalidEdit(f"the patch does not apply to {what}: {exc}") from None
        if not isinstance(context, dict):
            raise InvalidEdit(f"the edited {what.removeprefix('the ')} must be a JSON object")
        size = len(canonical_json(context))
        if size > self.max_edit_bytes:
            raise TooLarge(f"the edited {what.removeprefix('the ')} is {size} bytes; at most {self.max_edit_bytes}")
        if proposal is not None:
            self._check_arguments(proposal.tool, context)
        ops = diff(base, context)
        if not ops:
            return None, ""
        workflow = self.contracts.workflows.get(request.workflow)
        if proposal is None and workflow is not None:
            _check_contract(workflow, base, context)
            _check_locked(workflow, ops)
        return ops, context_hash(context)

    def _check_arguments(self, tool: str, arguments: dict[str, Any]) -> None:
        spec = self.tools.get(tool)
        if spec is None:
            raise InvalidEdit(f"the tool {tool!r} is not registered here, so its edited arguments cannot be checked")
        errors = documents.problems(spec.spec.args_schema, arguments, "arguments")
        if errors:
            raise InvalidEdit(f"the edited arguments of {tool} break its schema: {documents.summary(errors)}")

    async def top_up(self, request: ReviewRequested, role: str, top_up: BudgetTopUp) -> None:
        """Refuse a top-up that is not approving a halt, or is more than the workflow or the role allows."""
        if request.halted is None or request.checkpoint is not None or request.proposal is not None:
            raise InvalidTopUp(
                f"review {request.review_id} is not of a halted step: a top-up is granted only approving a halt"
            )
        workflow = self.contracts.workflows.get(request.workflow)
        if workflow is None or workflow.max_top_up is None:
            # No bound: the sentence says so, whatever the amounts.
            raise InvalidTopUp(
                beyond_the_workflow(workflow, request.workflow, request.task_id, BudgetTopUp(), top_up) or ""
            )
        mine = self.directory.top_up_limit(role)
        if mine is not None and (over := top_up.beyond(mine)):
            raise NotAllowed(f"the role {role!r} may grant at most {amounts(mine)} per approval: {', '.join(over)}")
        before = await granted_so_far(self.budgets, request.task_id)
        if refused := beyond_the_workflow(workflow, request.workflow, request.task_id, before, top_up):
            raise InvalidTopUp(refused)


def _check_locked(workflow: WorkflowSpec, ops: list[dict[str, Any]]) -> None:
    """No operation may touch a locked field, nor a field that holds one (replacing ``/input`` touches
    ``/input/employee_id``)."""
    for op in ops:
        for path in filter(None, (op.get("path"), op.get("from"))):
            for locked in workflow.locked_fields:
                if path == locked or path.startswith(locked + "/") or locked.startswith(path + "/"):
                    raise InvalidEdit(
                        f"{path} may not be edited in review: workflow {workflow.name!r} locks {locked} "
                        "(locked_fields in workflows.yaml)"
                    )


def _check_contract(workflow: WorkflowSpec, before: dict[str, Any], after: dict[str, Any]) -> None:
    """The edited context still satisfies what the next steps rely on: the input and every finished step's output."""
    for key in ("input", "steps"):
        if key in before and key not in after:
            raise InvalidEdit(f"the edited context has no {key!r}: the workflow's steps read it")
    if "input" in after:
        _validate(workflow.input_schema, after["input"], "input", "the workflow's input schema")
    steps = after.get("steps", {})
    if not isinstance(steps, dict):
        raise InvalidEdit("steps: must be an object of each finished step's output")
    known = {step.name: step for step in workflow.steps}
    for name in before.get("steps", {}) if isinstance(before.get("steps"), dict) else {}:
        if name not in steps:
            raise InvalidEdit(f"steps/{name}: a finished step's output may not be removed")
    for name, output in steps.items():
        if name not in known:
            raise InvalidEdit(f"steps/{name}: workflow {workflow.name!r} has no such step")
        _validate(known[name].output_schema, output, f"steps/{name}", f"step {name!r}'s output schema")


def _validate(schema: dict[str, Any], document: Any, where: str, what: str) -> None:
    found = documents.problems(schema, document, where)
    if found:
        raise InvalidEdit(f"the edited context breaks {what}: {documents.summary(found)}")
