"""Structured corrections for model output the runner cannot use.

A reply that is empty, not a JSON object, or cut off, and a tool call whose
arguments are not valid JSON, are never a crash: the runner sends the model
one of these (bounded by the agent's ``max_tool_corrections``) and lets it try
again. The shapes match the registry's ``ToolCallError`` observations, so the
model sees one error format whatever went wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from handrail.llm.base import ModelReply, ToolCall
from handrail.tools.registry import ToolCallError

#: What the model is asked for instead, in every reply correction.
EXPECTED = "a tool call, or a final answer that is exactly one JSON object"


@dataclass(frozen=True)
class ReplyCorrection:
    """Why a reply without tool calls is not an answer, as the model will read it."""

    code: str  # empty_reply | answer_not_json | answer_truncated | answer_filtered
    message: str

    def as_message(self) -> str:
        """The correction as the user message sent back to the model."""
        return json.dumps({"error": {"code": self.code, "message": self.message, "expected": EXPECTED}})


def reply_correction(reply: ModelReply) -> ReplyCorrection:
    """The correction for a reply that has neither tool calls nor an answer."""
    if reply.truncated:
        code = "answer_truncated"
    elif reply.finish_reason == "content_filter":
        code = "answer_filtered"
    elif not (reply.raw_text or "").strip():
        code = "empty_reply"
    else:
        code = "answer_not_json"
    return ReplyCorrection(code, reply.answer_error or "the reply had neither a tool call nor an answer")


def arguments_correction(call: ToolCall) -> ToolCallError | None:
    """A structured ``invalid_arguments`` error when the call's arguments did not parse as JSON."""
    if call.arguments_error is None:
        return None
    return ToolCallError("invalid_arguments", call.name, call.arguments_error)


def plan_correction(problems: list[str]) -> str:
    """The user message telling an orchestrating step's model why its plan cannot run."""
    return json.dumps(
        {
            "error": {
                "code": "plan_rejected",
                "message": "the plan cannot run as answered; answer a corrected plan",
                "problems": problems,
            }
        }
    )
