"""Fitting a conversation into an agent's section caps: what goes, what is recorded, what halts."""

from __future__ import annotations

import json

import pytest

from handrail.context import ContextOverCap, ContextWindow, message_hash
from handrail.contracts.context import ContextBudget, Policy, SectionCaps
from handrail.llm import ChatMessage, ToolCall
from handrail.llm.compaction import omitted_turns
from handrail.llm.tokens import ESTIMATED

MAX_OUTPUT = 50


def _conversation(turns: int) -> list[ChatMessage]:
    messages = [ChatMessage("system", "You look things up."), ChatMessage("user", json.dumps({"goal": "g"}))]
    for i in range(turns):
        messages.append(ChatMessage("assistant", tool_calls=(ToolCall(f"c{i}", "lookup", {"i": i}),)))
        messages.append(
            ChatMessage("tool", json.dumps({"i": i, "text": "x" * 120}), tool_call_id=f"c{i}", name="lookup")
        )
    return messages


def _window(budget: ContextBudget, summaries: list[list[ChatMessage]] | None = None) -> ContextWindow:
    async def summarise(previous: str | None, turns: list[ChatMessage]) -> str:
        assert summaries is not None
        summaries.append(turns)
        return f"{previous or ''} {len(turns)} messages about lookups".strip()

    return ContextWindow(budget, lambda _model: ESTIMATED, "m", MAX_OUTPUT, summarise=summarise)


async def test_no_caps_shows_the_conversation_as_it_is() -> None:
    messages = _conversation(30)
    prompt = await _window(ContextBudget()).fit(messages, [], 31)
    assert prompt.messages == messages and prompt.tokens_for("m") == ESTIMATED.prompt(messages)


async def test_keep_last_turns_leaves_earlier_turns_out_once_and_for_all() -> None:
    budget = ContextBudget(window_tokens=600, policy=Policy.KEEP_LAST_TURNS, keep_last_turns=3)
    window, messages = _window(budget), _conversation(12)
    prompt = await window.fit(messages, [], 13)
    assert prompt.tokens_for("m") + MAX_OUTPUT <= 600
    assert omitted_turns(prompt.messages) == 9 and prompt.messages[-6:] == messages[-6:]
    [compaction] = window.compactions
    assert compaction.at_turn == 13 and compaction.replaced == [message_hash(m) for m in messages[2:20]]
    assert compaction.tokens_before > compaction.tokens_after > 0
    # One more turn fits as it is: nothing that went comes back, nothing more goes, nothing is recorded twice.
    messages += _conversation(13)[-2:]
    again = await window.fit(messages, [], 14)
    assert omitted_turns(again.messages) == 9 and len(window.compactions) == 1


async def test_summaries_fold_in_the_previous_one_and_a_restored_window_does_not_ask_again() -> None:
    budget = ContextBudget(window_tokens=450, policy=Policy.SUMMARISE, keep_last_turns=2, summary_max_tokens=40)
    asked: list[list[ChatMessage]] = []
    window, messages = _window(budget, asked), _conversation(10)
    first = await window.fit(messages, [], 11)
    assert len(asked) == 1 and first.messages[2].content.startswith("[handrail: summary of 8 earlier turns]")
    messages += _conversation(20)[20:]
    second = await window.fit(messages, [], 21)
    assert len(asked) == 2 and "16 messages about lookups" in second.messages[2].content
    assert second.tokens_for("m") + MAX_OUTPUT <= 450
    # A step that stopped for an approval carries on with the same prompt, without another summary.
    restored = _window(budget, asked)
    restored.restore(messages, window.compactions)
    assert (await restored.fit(messages, [], 21)).messages == second.messages and len(asked) == 2


async def test_dropping_observations_elides_the_oldest_first_and_keeps_the_last_turns() -> None:
    budget = ContextBudget(sections=SectionCaps(observations=200), policy=Policy.DROP_OLDEST_OBSERVATIONS)
    window, messages = _window(budget), _conversation(8)
    prompt = await window.fit(messages, [], 9)
    results = [m for m in prompt.messages if m.role == "tool"]
    assert len(results) == 8  # every turn is still there ...
    elided = [json.loads(m.content)["elided"] for m in results if "elided" in m.content]
    assert elided and results[-1] == messages[-1]  # ... the oldest results elided, the last one whole
    assert sum(ESTIMATED.message(m) for m in results) <= 200
    [compaction] = window.compactions
    assert [h[:12] for h in compaction.replaced] == elided


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (ContextBudget(sections=SectionCaps(system=2)), r"the system section takes \d+ tokens, over its cap of 2"),
        (ContextBudget(window_tokens=60), r"with the reply's 50 that is over the 60-token window"),
        (ContextBudget(sections=SectionCaps(history=1)), r"history section .* even with only the last turn shown"),
    ],
)
async def test_what_cannot_be_compacted_halts_before_the_call(budget: ContextBudget, expected: str) -> None:
    with pytest.raises(ContextOverCap, match=expected) as halted:
        await _window(budget).fit(_conversation(3), [], 4)
    assert halted.value.error_type == "context_over_cap"
