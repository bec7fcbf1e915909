"""The built-in ``scripted`` provider: follows an agent's declared plan, turn by turn.

It reads the conversation the way a real model would and nothing else: the
task is the JSON in the first user message, tool results are the data of the tool
messages (``handrail.tools.observations``). Turn N of the plan answers the N-th model call. Strings of the form
``${path}`` are filled from ``{goal, step, context, input, tools}``, where
``tools.<name>`` is the last result of that tool. Token counts are estimates
(about four characters a token) and cost is zero: nothing was bought. A turn's
``delay_s`` makes it take that long, like a real model.

A prompt compacted to fit its context window still counts the turns it leaves
out (``omitted_turns``), so the plan goes on where it was; a request for a
summary (``is_summary_request``) gets ``extractive_summary``'s list of what happened.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from handrail.contracts.agents import ScriptedAnswer, ScriptedCall
from handrail.errors import StepFailed
from handrail.llm.base import ModelReply, ModelRequest, ToolCall
from handrail.llm.compaction import extractive_summary, is_summary_request, omitted_turns
from handrail.tools.observations import observation_data

_REF = re.compile(r"^\$\{([A-Za-z0-9_.-]+)\}$")
#: Characters per token for the estimate; the usual rule of thumb for English text.
_CHARS_PER_TOKEN = 4


class ScriptedProvider:
    """A deterministic model that plays back ``plan``."""

    name = "scripted"

    def __init__(self, plan: list[ScriptedCall | ScriptedAnswer]) -> None:
        self._plan = plan

    async def complete(self, request: ModelRequest) -> ModelReply:
        turn = _turn(request)
        if not is_summary_request(request) and turn < len(self._plan) and self._plan[turn].delay_s:
            await asyncio.sleep(self._plan[turn].delay_s)
        return self.reply(request)

    def reply(self, request: ModelRequest) -> ModelReply:
        """The plan's next turn for ``request`` (no I/O: a model server replaying plans calls this too)."""
        if is_summary_request(request):
            summary = {"summary": extractive_summary(request)}
            chars = sum(len(m.content) for m in request.messages)
            return ModelReply(
                provider=self.name,
                model=request.model,
                answer=summary,
                input_tokens=_tokens(chars),
                output_tokens=_tokens(len(json.dumps(summary))),
            )
        turn = _turn(request)
        if turn >= len(self._plan):
            raise StepFailed(f"the scripted plan has {len(self._plan)} turns; turn {turn + 1} was asked for")
        scope = _scope(request)
        action = self._plan[turn]
        prompt_chars = sum(len(m.content) for m in request.messages)
        if isinstance(action, ScriptedCall):
            args = _fill(action.args, scope)
            reply_chars = len(json.dumps(args)) + len(action.call)
            return ModelReply(
                provider=self.name,
                model=request.model,
                tool_calls=(ToolCall(id=f"call_{turn}", name=action.call, arguments=args),),
                input_tokens=_tokens(prompt_chars),
                output_tokens=_tokens(reply_chars),
            )
        answer = _fill(action.answer, scope)
        return ModelReply(
            provider=self.name,
            model=request.model,
            answer=answer,
            confidence=action.confidence,
            input_tokens=_tokens(prompt_chars),
            output_tokens=_tokens(len(json.dumps(answer))),
        )


def _turn(request: ModelRequest) -> int:
    """Which turn of the plan ``request`` asks for: the replies so far, those a compaction left out too."""
    return sum(1 for m in request.messages if m.role == "assistant") + omitted_turns(request.messages)


def _tokens(chars: int) -> int:
    return max(1, chars // _CHARS_PER_TOKEN)


def _scope(request: ModelRequest) -> dict[str, Any]:
    task: dict[str, Any] = {}
    tools: dict[str, Any] = {}
    for message in request.messages:
        if message.role == "user" and not task:
            task = json.loads(message.content)
        elif message.role == "tool" and message.name:
            tools[message.name] = observation_data(message.content)
    context = task.get("context", {})
    return {
        "goal": task.get("goal"),
        "step": task.get("step"),
        "context": context,
        "input": context.get("input", {}),
        "tools": tools,
    }


def _fill(template: Any, scope: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        return {k: _fill(v, scope) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, scope) for v in template]
    if isinstance(template, str) and (match := _REF.match(template)):
        return _lookup(scope, match.group(1))
    return template


def _lookup(scope: dict[str, Any], path: str) -> Any:
    value: Any = scope
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None  # like a model that does not know: the output schema decides
    return value
