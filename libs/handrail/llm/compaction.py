"""What a compacted prompt says about itself, and the ``summarise`` policy's model call.

A prompt that leaves earlier turns out says so in a note (or a summary) right after the task message,
with how many turns it leaves out (``omitted_turns`` reads it back: the ``scripted`` model counts its
plan's turns with it). The summarising call asks what ``summary_request`` builds; ``summary_text``
reads the answer.

The call is the agent's own model chain, made by the step runner through the step's guard like any
other (admitted, reserved with the same token count, settled, listed in the step's decisions), with
``summary_max_tokens`` as the size the summary may take. The built-in ``scripted`` model recognises
the request (``is_summary_request``) and answers with ``extractive_summary``: deterministic, and
honest about being a list of what happened rather than a model's prose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from handrail.llm.base import ChatMessage, ModelReply, ModelRequest

#: The summarising request's system prompt starts with this (the scripted model looks for it).
SUMMARY_INSTRUCTION = "You compact an agent's conversation."
_ASK = (
    SUMMARY_INSTRUCTION + " Summarise the turns below (the agent's tool calls, what they returned, and any "
    "corrections) so that the agent can go on without them: keep identifiers, numbers and results exactly, "
    'drop repetition. At most {max_tokens} tokens. Answer with a JSON object: {{"summary": "..."}}.'
)
#: How much of each message the extractive summary keeps.
_EXCERPT_CHARS = 80

NOTE = "[handrail: {n} earlier turns are not shown: left out to fit the context window]"
SUMMARY = "[handrail: summary of {n} earlier turns]\n{summary}"
_OMITTED = re.compile(r"^\[handrail: (?:summary of )?(\d+) earlier turns")


def omitted_turns(messages: Sequence[ChatMessage]) -> int:
    """How many earlier turns a fitted prompt leaves out (from its note or summary)."""
    for message in messages:
        if message.role == "user" and (match := _OMITTED.match(message.content)):
            return int(match.group(1))
    return 0


def summary_request(model: str, previous: str | None, turns: Sequence[ChatMessage], max_tokens: int) -> ModelRequest:
    """The request that asks ``model`` to summarise ``turns`` (folding in the ``previous`` summary)."""
    lines = [f"Summary so far: {previous}"] if previous else []
    lines += [_line(m) for m in turns]
    return ModelRequest(
        model=model,
        messages=[
            ChatMessage("system", _ASK.format(max_tokens=max_tokens)),
            ChatMessage("user", "\n".join(lines)),
        ],
    )


def summary_text(reply: ModelReply) -> str | None:
    """The summary a reply holds: its answer's ``summary``, else its text; None when it holds none."""
    if reply.answer is not None and isinstance(reply.answer.get("summary"), str):
        text: str = reply.answer["summary"]
        return text.strip() or None
    return (reply.raw_text or "").strip() or None


def is_summary_request(request: ModelRequest) -> bool:
    """Whether ``request`` asks for a summary of a conversation (``summary_request``)."""
    first = request.messages[0] if request.messages else None
    return first is not None and first.role == "system" and first.content.startswith(SUMMARY_INSTRUCTION)


def extractive_summary(request: ModelRequest) -> str:
    """The scripted model's summary: the lines it was given, each cut to its first characters."""
    body = request.messages[-1].content if request.messages else ""
    return "; ".join(line[:_EXCERPT_CHARS] for line in body.splitlines() if line)


def _line(message: ChatMessage) -> str:
    if message.tool_calls:
        calls = ", ".join(f"{c.name}({json.dumps(c.arguments)})" for c in message.tool_calls)
        return f"assistant called {calls}" + (f" saying {message.content}" if message.content else "")
    if message.role == "tool":
        return f"{message.name or 'tool'} returned {message.content}"
    return f"{message.role}: {message.content}"
