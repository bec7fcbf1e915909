"""A model call's prompt, assembled from sections within their token caps.

The conversation a step keeps (``messages``: system prompt, task, then turns) is never changed here;
each model call is shown a *fit* of it (``ContextWindow.fit``):

- sections: ``system`` (system messages), ``tools`` (the tool descriptions), ``task`` (the message with the
  goal, the step and the step's view of the context), ``history`` (what the model wrote, corrections, the
  note or summary of earlier turns) and ``observations`` (tool results). Each is counted with the model's
  tokenizer (``handrail.llm.tokens``), the same count the budget reservation uses (``Prompt.tokens_for``).
- ``system``, ``tools`` or ``task`` over its cap, or the three with the reply's ``max_output_tokens`` over
  the window, cannot be compacted: the step halts (``context_over_cap``) before the call.
- ``history`` or ``observations`` over its cap, or the prompt over the window, applies the agent's policy:
  ``keep_last_turns`` leaves earlier turns out (a note says how many); ``drop_oldest_observations`` elides
  the oldest tool results first (each becomes ``{"elided": <its hash's first 12 digits>}``), and earlier
  turns go when that is not enough; ``summarise`` replaces earlier turns with a summary its model writes
  (``handrail.llm.compaction``). Each leaves out at most what it must; when the last turns alone are
  still over, more turns go, down to the last one.
- What is left out stays left out for the rest of the step (the prompt does not flap), and each
  compaction is recorded (``Compaction``: the hashes of the messages the model no longer saw).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field

from handrail.contracts.context import ContextBudget, Policy, Section
from handrail.errors import TaskHalted
from handrail.hashing import canonical_json, sha256_hex
from handrail.llm.base import ChatMessage
from handrail.llm.compaction import NOTE, SUMMARY
from handrail.llm.tokens import ESTIMATED, TokenCounter
from handrail.messages.context import Compaction, ContextSeen
from handrail.tools.registry import ToolSpec

#: Writes the summary of some turns, folding in the previous summary: (previous, turns) -> summary.
Summarise = Callable[[str | None, list[ChatMessage]], Awaitable[str]]


#: How much of an elided result's hash its stub shows: enough to find it in the trail's full hashes.
_STUB_HASH_CHARS = 12


class ContextOverCap(TaskHalted):
    """A part of the prompt that cannot be compacted is over its cap (or the window): the call is not made."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, error_type="context_over_cap")


def message_hash(message: ChatMessage) -> str:
    """sha256 of the RFC 8785 JSON of ``message`` (role, content, tool calls, id, name; empty ones omitted)."""
    body = asdict(message)
    body["tool_calls"] = [{k: v for k, v in asdict(c).items() if v is not None} for c in message.tool_calls]
    return sha256_hex(canonical_json({k: v for k, v in body.items() if v not in (None, [], "")}))


@dataclass(frozen=True)
class Prompt:
    """What one model call is shown, and its size as counted for each model of the chain."""

    messages: list[ChatMessage]
    tools: list[ToolSpec]
    counters: Callable[[str], TokenCounter]

    def tokens_for(self, model: str) -> int:
        """The prompt's tokens for ``model``: what the caps were checked with, and what is reserved."""
        return self.counters(model).prompt(self.messages, self.tools)


@dataclass
class _Left:
    """What the fit leaves out so far: by position in the step's conversation."""

    hidden: set[int] = field(default_factory=set)
    elided: set[int] = field(default_factory=set)
    summary: str | None = None
    summarised: int = 0  # turns the summary covers
    compactions: list[Compaction] = field(default_factory=list)


class ContextWindow:
    """Fits a step's conversation into an agent's ``ContextBudget`` for each model call."""

    def __init__(
        self,
        budget: ContextBudget,
        counters: Callable[[str], TokenCounter],
        model: str,
        max_output_tokens: int,
        *,
        summarise: Summarise | None = None,
    ) -> None:
        self.budget = budget
        self.counters = counters
        self.model = model
        self.counter = counters(model)
        self.max_output_tokens = max_output_tokens
        self.summarise = summarise
        self._left = _Left()

    @classmethod
    def unbounded(cls) -> ContextWindow:
        """A window with no caps: the prompt goes as it is."""
        return cls(ContextBudget(), lambda _model: ESTIMATED, "", 0)

    def restore(self, messages: Sequence[ChatMessage], compactions: Sequence[Compaction]) -> None:
        """Carry on a step that stopped (for an approval) with what its earlier compactions left out."""
        hashes = [message_hash(m) for m in messages]
        left = _Left(compactions=list(compactions))
        for compaction in compactions:
            for replaced in compaction.replaced:
                free = [i for i, h in enumerate(hashes) if h == replaced and i not in left.hidden | left.elided]
                if free:
                    (left.elided if compaction.policy == "drop_oldest_observations" else left.hidden).add(free[0])
            if compaction.summary is not None:
                left.summary = compaction.summary
        turns = _turns(messages)
        left.summarised = sum(1 for t in turns if all(i in left.hidden for i in t)) if left.summary else 0
        self._left = left

    @property
    def compactions(self) -> list[Compaction]:
        """Every compaction of the step so far, oldest first."""
        return list(self._left.compactions)

    async def fit(self, messages: Sequence[ChatMessage], tools: list[ToolSpec], turn: int) -> Prompt:
        """The prompt of model turn ``turn``: ``messages`` within the caps, compacting as the policy says."""
        if self.budget.unbounded:
            return Prompt(list(messages), tools, self.counters)
        self._check_fixed(messages, tools)
        while (over := self._over(messages, tools)) is not None:
            before = (set(self._left.hidden), set(self._left.elided), self._left.summary)
            await self._compact(messages, tools, turn, over)
            if before == (self._left.hidden, self._left.elided, self._left.summary):
                raise ContextOverCap(f"{over}, even with only the last turn shown")
        return Prompt(self._shown(messages), tools, self.counters)

    # -- counting -----------------------------------------------------------------------------------

    def _sections(self, messages: Sequence[ChatMessage], tools: list[ToolSpec]) -> dict[Section, int]:
        sizes = dict.fromkeys(Section, 0)
        sizes[Section.TOOLS] = self.counter.tools(tools)
        for position, message in enumerate(self._shown(messages)):
            sizes[_section(position, message)] += self.counter.message(message)
        return sizes

    def _check_fixed(self, messages: Sequence[ChatMessage], tools: list[ToolSpec]) -> None:
        sizes = self._sections(messages, tools)
        for section in (Section.SYSTEM, Section.TOOLS, Section.TASK):
            cap = self.budget.sections.cap(section)
            if cap is not None and sizes[section] > cap:
                hint = " (a step's context_view shows less of the context)" if section == Section.TASK else ""
                raise ContextOverCap(
                    f"the {section.value} section takes {sizes[section]} tokens, over its cap of {cap}{hint}"
                )
        window = self.budget.window_tokens
        fixed = sizes[Section.SYSTEM] + sizes[Section.TOOLS] + sizes[Section.TASK] + self.max_output_tokens
        if window is not None and fixed > window:
            raise ContextOverCap(
                f"the system prompt, tools and task take {fixed - self.max_output_tokens} tokens: with the reply's "
                f"{self.max_output_tokens} that is over the {window}-token window"
            )

    def _over(self, messages: Sequence[ChatMessage], tools: list[ToolSpec]) -> str | None:
        """What is over its cap in the prompt as it stands, or None."""
        sizes = self._sections(messages, tools)
        for section in (Section.HISTORY, Section.OBSERVATIONS):
            cap = self.budget.sections.cap(section)
            if cap is not None and sizes[section] > cap:
                return f"the {section.value} section takes {sizes[section]} tokens, over its cap of {cap}"
        window = self.budget.window_tokens
        total = self.counter.prompt(self._shown(messages), tools) + self.max_output_tokens
        if window is not None and total > window:
            return (
                f"the prompt with the reply's {self.max_output_tokens} tokens takes {total}, "
                f"over the {window}-token window"
            )
        return None

    # -- the policies -------------------------------------------------------------------------------

    async def _compact(self, messages: Sequence[ChatMessage], tools: list[ToolSpec], turn: int, over: str) -> None:
        policy, left = self.budget.policy, self._left
        shown_turns = [t for t in _turns(messages) if not all(i in left.hidden for i in t)]
        keep = min(self.budget.keep_last_turns, len(shown_turns))
        if policy == Policy.DROP_OLDEST_OBSERVATIONS and ("observations" in over or "window" in over):
            # The last turn's results are what the model acts on now: they go last, with their turn.
            elidable = [
                i
                for t in shown_turns[:-1]
                for i in t
                if messages[i].role == "tool"
                and i not in left.elided
                and self.counter.message(messages[i]) > self.counter.message(_stub(messages[i]))
            ]
            if elidable:
                self._elide(messages, tools, turn, elidable)
                return
        if len(shown_turns) <= 1:
            return  # nothing more can go: ``fit`` says so
        # Earlier turns go: down to the last `keep_last_turns` at once, one by one after that.
        leaving = shown_turns[: len(shown_turns) - keep] or shown_turns[:1]
        gone = [i for t in leaving for i in t]
        if policy == Policy.SUMMARISE:
            await self._summarise(messages, turn, gone, len(leaving))
        else:
            note = ChatMessage("user", NOTE.format(n=len(leaving)))
            self._record(messages, turn, policy, gone, after=self.counter.message(note))
            left.hidden.update(gone)

    def _elide(self, messages: Sequence[ChatMessage], tools: list[ToolSpec], turn: int, elidable: list[int]) -> None:
        """Elide the oldest observations until the observations (and the window) fit, or none are left."""
        left, elided = self._left, []
        for position in elidable:
            left.elided.add(position)
            elided.append(position)
            over = self._over(messages, tools)
            if over is None or ("observations" not in over and "window" not in over):
                break
        after = sum(self.counter.message(_stub(messages[i])) for i in elided)
        self._record(messages, turn, Policy.DROP_OLDEST_OBSERVATIONS, elided, after=after)

    async def _summarise(self, messages: Sequence[ChatMessage], turn: int, gone: list[int], turns: int) -> None:
        if self.summarise is None:
            raise ContextOverCap("the summarise policy has no model to summarise with")
        left = self._left
        summary = await self.summarise(left.summary, [messages[i] for i in gone])
        summary = self._cut(summary, self.budget.summary_max_tokens)
        covered = left.summarised + turns
        after = self.counter.message(ChatMessage("user", SUMMARY.format(n=covered, summary=summary)))
        self._record(messages, turn, Policy.SUMMARISE, gone, after=after, summary=summary)
        left.hidden.update(gone)
        left.summary, left.summarised = summary, covered

    def _record(
        self,
        messages: Sequence[ChatMessage],
        turn: int,
        policy: Policy,
        positions: list[int],
        *,
        after: int,
        summary: str | None = None,
    ) -> None:
        shown = [messages[i] if i not in self._left.elided else _stub(messages[i]) for i in positions]
        self._left.compactions.append(
            Compaction(
                at_turn=turn,
                policy=policy.value,
                replaced=[message_hash(messages[i]) for i in positions],
                tokens_before=sum(self.counter.message(m) for m in shown),
                tokens_after=after,
                summary=summary,
            )
        )

    # -- the prompt as shown ------------------------------------------------------------------------

    def _shown(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        left = self._left
        hidden_turns = sum(1 for t in _turns(messages) if all(i in left.hidden for i in t))
        shown: list[ChatMessage] = []
        for position, message in enumerate(messages):
            if position in left.hidden:
                continue
            shown.append(_stub(message) if position in left.elided else message)
            if position == 1 and hidden_turns:
                shown.append(self._note(hidden_turns))
        return shown

    def _note(self, hidden_turns: int) -> ChatMessage:
        left = self._left
        if left.summary is not None:
            return ChatMessage("user", SUMMARY.format(n=hidden_turns, summary=left.summary))
        return ChatMessage("user", NOTE.format(n=hidden_turns))

    def _cut(self, text: str, max_tokens: int) -> str:
        """``text``, shortened from the end until it takes at most ``max_tokens``."""
        while text and self.counter.count_text(text) > max_tokens:
            text = text[: max(0, int(len(text) * 0.9) - 1)]
        return text


def _section(position: int, message: ChatMessage) -> Section:
    if message.role == "system":
        return Section.SYSTEM
    if position == 1:
        return Section.TASK
    return Section.OBSERVATIONS if message.role == "tool" else Section.HISTORY


def _turns(messages: Sequence[ChatMessage]) -> list[list[int]]:
    """The conversation after the system prompt and the task, as turns: positions of each turn's messages.

    A turn starts with what the model wrote and holds what followed it (tool results, a correction)."""
    turns: list[list[int]] = []
    for position in range(2, len(messages)):
        if messages[position].role == "assistant" or not turns:
            turns.append([])
        turns[-1].append(position)
    return turns


def _stub(message: ChatMessage) -> ChatMessage:
    """An elided tool result: what it was, by hash, without its content."""
    body = {"elided": message_hash(message)[:_STUB_HASH_CHARS]}
    return ChatMessage(message.role, json.dumps(body), message.tool_calls, message.tool_call_id, message.name)


def context_seen(
    view_name: str | None, pointers: Sequence[str] | None, view_hash: str, window: ContextWindow | None
) -> ContextSeen:
    """The step's ``ContextSeen``: its view and the compactions of its conversation."""
    return ContextSeen(
        view=view_name,
        pointers=list(pointers) if pointers is not None else None,
        view_hash=view_hash,
        compactions=window.compactions if window is not None else [],
    )
