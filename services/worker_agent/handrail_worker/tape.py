"""A step's tape: every answer its model and tools gave, recorded as the step runs, or played back.

Live, a ``Recorder`` is the tape: each model reply (with the hash of the request it answered), each
tool attempt's result or failure, and each call the guard refused are kept in order and travel with
the step's report (``StepRecording``). On replay (``handrail_worker.replay``) a ``Player`` is the
tape: no model or tool is called; each call the re-run step makes must be the one recorded at that
point (same model request, same tool and arguments), or the replay stops with ``Diverged`` saying
where and how.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from handrail import jsontext
from handrail.hashing import canonical_json, sha256_hex
from handrail.llm import Attempt, ChatMessage, ModelReply, ModelRequest, ToolCall
from handrail.messages import RecordedCall, RecordedFailure
from handrail.tools import ToolCallError, ToolFailure, ToolSpec
from handrail.tools.kinds import ToolErrorKind, ToolOutcomeUnknown


class Tape(Protocol):
    """Where a step's calls get their answers from (``handrail_worker.runner``)."""

    async def model(self, request: ModelRequest, ask: Callable[[], Awaitable[ModelReply]]) -> ModelReply: ...
    async def tool(self, name: str, args_hash: str, run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]: ...
    def refused(self, name: str, args_hash: str, error: ToolCallError) -> None: ...

    @property
    def calls(self) -> list[RecordedCall]: ...


class Diverged(Exception):
    """The re-run step made a call other than the one recorded at this point (or one more than it made)."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position


def request_hash(request: ModelRequest) -> str:
    """sha256 of the request's canonical JSON: the model, every message, every tool offered.

    The bytes are those of ``canonical_json`` over the request as plain JSON (``dataclasses.asdict``,
    tuples as lists), put together from its parts in key order: the tools' part, the same at every
    call of a step, is encoded once per tool (``_spec_json``), not copied and encoded at each call.
    """
    messages = [_message(m) for m in request.messages]
    tools = b",".join(_spec_json(spec) for spec in request.tools)
    return sha256_hex(
        b'{"messages":' + canonical_json(messages) + b',"model":' + canonical_json(request.model)
        + b',"tools":[' + tools + b"]}"
    )  # fmt: skip


def _message(message: ChatMessage) -> dict[str, Any]:
    calls = [
        {"id": c.id, "name": c.name, "arguments": c.arguments, "arguments_error": c.arguments_error}
        for c in message.tool_calls
    ]
    return {
        "role": message.role,
        "content": message.content,
        "tool_calls": calls,
        "tool_call_id": message.tool_call_id,
        "name": message.name,
    }


#: Each tool spec's canonical JSON, by the spec's id (the spec is kept, so its id cannot be reused).
_SPECS: dict[int, tuple[ToolSpec, bytes]] = {}
_SPECS_KEPT = 4096


def _spec_json(spec: ToolSpec) -> bytes:
    cached = _SPECS.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    encoded = canonical_json(_plain(dataclasses.asdict(spec)))
    if len(_SPECS) >= _SPECS_KEPT:
        _SPECS.clear()
    _SPECS[id(spec)] = (spec, encoded)
    return encoded


class Recorder:
    """The live tape: asks, runs, and keeps what came back."""

    def __init__(self) -> None:
        self._calls: list[RecordedCall] = []

    @property
    def calls(self) -> list[RecordedCall]:
        return self._calls

    async def model(self, request: ModelRequest, ask: Callable[[], Awaitable[ModelReply]]) -> ModelReply:
        reply = await ask()  # a model that fails ends the step: nothing of it is replayed
        self._calls.append(
            RecordedCall(kind="model", name=request.model, request_hash=request_hash(request), reply=reply_json(reply))
        )
        return reply

    async def tool(self, name: str, args_hash: str, run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        try:
            result = await run()
        except ToolFailure as exc:
            self._calls.append(_failed(name, args_hash, "tool_failure", exc.kind, str(exc)))
            raise
        except ToolOutcomeUnknown as exc:
            failure = _failed(name, args_hash, "outcome_unknown", exc.kind, str(exc), timed_out=exc.timed_out)
            self._calls.append(failure)
            raise
        self._calls.append(RecordedCall(kind="tool", name=name, request_hash=args_hash, reply=_plain(result)))
        return result

    def refused(self, name: str, args_hash: str, error: ToolCallError) -> None:
        refusal = _plain(dataclasses.asdict(error))
        self._calls.append(RecordedCall(kind="refused", name=name, request_hash=args_hash, refusal=refusal))


class Player:
    """The replay tape: answers each call from the recording, in order, and calls nothing."""

    def __init__(self, calls: list[RecordedCall]) -> None:
        self._recorded = list(calls)
        self.position = 0

    @property
    def calls(self) -> list[RecordedCall]:
        return self._recorded[: self.position]

    @property
    def left(self) -> list[RecordedCall]:
        """What the recording has that the re-run did not ask for (the original step made more calls)."""
        return self._recorded[self.position :]

    async def model(self, request: ModelRequest, ask: Callable[[], Awaitable[ModelReply]]) -> ModelReply:
        recorded = self._next("model", request.model, request_hash(request))
        assert recorded.reply is not None
        return reply_of(recorded.reply)

    async def tool(self, name: str, args_hash: str, run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        recorded = self._next("tool", name, args_hash)
        failure = recorded.failure
        if failure is not None:
            kind = ToolErrorKind(failure.kind)
            if failure.raised == "tool_failure":
                raise ToolFailure(failure.message, kind=kind)
            raise ToolOutcomeUnknown(failure.message, kind=kind, timed_out=failure.timed_out)
        return dict(recorded.reply or {})

    def refusal(self, name: str, args_hash: str) -> ToolCallError | None:
        """The guard's refusal of this call, when that is what the recording has here (the replay's guard asks)."""
        if self.position < len(self._recorded) and self._recorded[self.position].kind == "refused":
            recorded = self._next("refused", name, args_hash)
            assert recorded.refusal is not None
            fields = dict(recorded.refusal)
            fields["kind"] = ToolErrorKind(fields["kind"]) if fields.get("kind") else None
            return ToolCallError(**fields)
        return None

    def refused(self, name: str, args_hash: str, error: ToolCallError) -> None:
        """Played back by ``refusal`` already."""

    def _next(self, kind: str, name: str, hash_: str) -> RecordedCall:
        at = self.position
        if at >= len(self._recorded):
            raise Diverged(at, f"call {at + 1}: the re-run made a {kind} call ({name}) the original step never made")
        recorded = self._recorded[at]
        if (recorded.kind, recorded.name, recorded.request_hash) != (kind, name, hash_):
            what = "was asked something else" if kind == recorded.kind == "model" else "went another way"
            raise Diverged(
                at,
                f"call {at + 1}: the re-run {what}: it made a {kind} call {name} ({hash_[:12]}) where the "
                f"recording has a {recorded.kind} call {recorded.name} ({recorded.request_hash[:12]})",
            )
        self.position += 1
        return recorded


def reply_json(reply: ModelReply) -> dict[str, Any]:
    """A model reply as JSON, every field kept (``reply_of`` turns it back)."""
    body: dict[str, Any] = _plain(reply)  # orjson writes a dataclass (and those in it) as its fields
    return body


def reply_of(body: dict[str, Any]) -> ModelReply:
    fields = dict(body)
    fields["tool_calls"] = tuple(ToolCall(**c) for c in fields.get("tool_calls", ()))
    fields["attempts"] = tuple(Attempt(**a) for a in fields.get("attempts", ()))
    return ModelReply(**fields)


def _failed(
    name: str, args_hash: str, raised: str, kind: ToolErrorKind, message: str, *, timed_out: bool = False
) -> RecordedCall:
    failure = RecordedFailure.model_validate(
        {"raised": raised, "kind": kind.value, "message": message, "timed_out": timed_out}
    )
    return RecordedCall(kind="tool", name=name, request_hash=args_hash, failure=failure)


def _plain(value: Any) -> Any:
    """``value`` as plain JSON (dataclasses as their fields, tuples as lists, anything else as its string),
    as it is stored."""
    return jsontext.loads(jsontext.dumps(value))
