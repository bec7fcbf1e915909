"""One bounded step: model call -> tool calls -> observations ... -> an answer.

Every call goes through the step's guard (halts, breakers, loop window,
budget). Every model-proposed tool call is checked against the registry and
the agent's allowed tools before it runs; a rejected call becomes a structured
error the model sees, and too many of them fail the step. A call a person must
approve first (``handrail.orchestration.approval_for_call``) is not made: the step
stops with a ``Proposal`` of it and its progress, and carries on from there when
the decision comes back (``HandoffEnvelope.resume``). Side-effecting tools run at
most once per idempotency key (task, step, tool, canonical arguments).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from handrail.autonomy import AutonomyLevels
from handrail.context import ContextWindow, Prompt, View, view_for
from handrail.context.assembly import context_seen
from handrail.contracts import AgentSpec, Autonomy, WorkflowSpec
from handrail.errors import TaskHalted
from handrail.hashing import canonical_json, sha256_hex
from handrail.llm import Attempt, ChatMessage, ModelProvider, ModelReply, ModelRequest, ToolCall
from handrail.llm.chain import as_chain
from handrail.llm.compaction import summary_request, summary_text
from handrail.llm.corrections import arguments_correction, plan_correction, reply_correction
from handrail.llm.models import ModelCatalogue
from handrail.llm.observers import Outcome, TracingObserver, observing
from handrail.llm.tokens import counters
from handrail.messages import (
    ContextSeen,
    Decision,
    HandoffEnvelope,
    ProposedCall,
    StepProgress,
    StepRecording,
    StepResume,
    Usage,
)
from handrail.metrics import TOOL_CALLS, TOOL_RESULTS_INVALID, labels
from handrail.observability import tracer
from handrail.orchestration import approval_for_call, plan_problems, remaining_steps
from handrail.prompts import step_scope
from handrail.state.effects import Claim, EffectStore
from handrail.tools import Tool, ToolCallError, ToolContext, ToolFailure, ToolRegistry, observation_text
from handrail.tools.kinds import bounded
from handrail_worker.guard import Ticket
from handrail_worker.overrides import ModelOverrides, PromptSource, ProviderFactory, prompt_for
from handrail_worker.tape import Recorder, Tape
from handrail_worker.tool_attempts import GaveUp, ToolCallAttempts, ToolGuard


class Guard(ToolGuard, Protocol):
    """The checks around a step's calls (``handrail_worker.guard.StepGuard``): a tool call's, and these."""

    async def start(self) -> None: ...
    async def before_model_call(
        self, index: int, model: str, prompt_tokens: int, prompt: str | None = None
    ) -> Ticket: ...


@dataclass
class StepOutcome:
    """What a step produced and what it cost."""

    output: dict[str, Any]
    confidence: float | None
    decisions: list[Decision] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    context_seen: ContextSeen | None = None
    #: Every answer the step's model and tools gave, in order (``handrail_worker.tape``).
    recording: StepRecording | None = None


@dataclass(frozen=True)
class Proposal:
    """A step stopped before a call a person must approve: the call, and where the step stands."""

    call: ProposedCall
    progress: StepProgress
    recording: StepRecording | None = None


@dataclass
class _Tally:
    model_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    corrections: int = 0

    def usage(self) -> Usage:
        return Usage(
            model_calls=self.model_calls,
            tool_calls=self.tool_calls,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
        )

    @classmethod
    def of(cls, usage: Usage, corrections: int) -> _Tally:
        return cls(**usage.model_dump(), corrections=corrections)


@dataclass
class _Step:
    """A step's running state: the conversation, its decisions and spend, the calls people approved."""

    messages: list[ChatMessage]
    prompt_ref: str
    decisions: list[Decision] = field(default_factory=list)
    tally: _Tally = field(default_factory=_Tally)
    turns: int = 0
    approved: set[str] = field(default_factory=set)
    view: View | None = None  # what of the task context the agent is shown
    window: ContextWindow = field(default_factory=ContextWindow.unbounded)  # fits the conversation into the caps
    tape: Tape = field(default_factory=Recorder)  # where its calls get their answers: live, or a recording

    def recording(self) -> StepRecording:
        return StepRecording(prompt=self.prompt_ref, calls=list(self.tape.calls))

    def seen(self) -> ContextSeen | None:
        """The step's view and compactions, for its record."""
        if self.view is None:
            return None
        return context_seen(self.view.name, self.view.pointers, self.view.hash, self.window)

    @classmethod
    def resumed(cls, progress: StepProgress) -> _Step:
        return cls(
            messages=[_message(m) for m in progress.messages],
            prompt_ref=progress.prompt,
            decisions=list(progress.decisions),
            tally=_Tally.of(progress.usage, progress.corrections),
            turns=progress.turns,
            approved=set(progress.approved_keys),
        )

    def progress(self, pending: list[ToolCall]) -> StepProgress:
        return StepProgress(
            messages=[_message_dict(m) for m in self.messages],
            pending_calls=[_call_dict(c) for c in pending],
            decisions=self.decisions,
            usage=self.tally.usage(),
            turns=self.turns,
            corrections=self.tally.corrections,
            approved_keys=sorted(self.approved),
            prompt=self.prompt_ref,
            context_seen=self.seen(),
        )


class _GuardAttempts:
    """The step's guard as the model chain's observer: every attempt, retries included, is reserved and settled."""

    def __init__(self, guard: Guard, next_index: Callable[[], int], prompt: Prompt, prompt_ref: str) -> None:
        self.guard = guard
        self.next_index = next_index
        self.prompt = prompt
        self.prompt_ref = prompt_ref
        self.tickets: list[Ticket] = []

    async def before_attempt(self, model: str) -> None:
        # The count the prompt's section caps were checked with, for the model this attempt is on.
        tokens = self.prompt.tokens_for(model)
        self.tickets.append(await self.guard.before_model_call(self.next_index(), model, tokens, self.prompt_ref))

    async def after_attempt(
        self,
        model: str,
        provider: str,
        outcome: Outcome,
        error_type: str | None,
        latency_ms: float,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None:
        await self.guard.after_call(
            self.tickets.pop(),
            "ok" if outcome == "ok" else "error",
            error_type,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
        )


class StepRunner:
    """Runs steps for one agent with its model provider and tools."""

    def __init__(
        self,
        agent: AgentSpec,
        provider: ModelProvider,
        tools: ToolRegistry,
        effects: EffectStore | None = None,
        on_effect_recorded: Callable[[str], None] | None = None,
        *,
        prompts: PromptSource | None = None,
        workflows: Mapping[str, WorkflowSpec] | None = None,
        before_effect: Callable[[str], None] | None = None,
        autonomy: AutonomyLevels | None = None,
        models: ModelCatalogue | None = None,
        override_models: ProviderFactory | None = None,
        tapes: Callable[[HandoffEnvelope], Tape] | None = None,
    ) -> None:
        self.agent = agent
        self.counters = counters(models)  # each model's tokenizer (or the estimate), for caps and reservations
        for model in agent.model_chain:
            self.counters(model)  # a tokenizer loads its ranks (~0.5 s of CPU) now, not in the first task's step
        # A lone provider runs as a one-model chain, so every call is observed and listed the same way.
        self.provider = as_chain(provider, agent.model_chain[0])
        self.overrides = ModelOverrides(agent, self.provider, override_models)  # a forked task's model, if any
        self.prompts = prompts
        self.tools = tools
        self.effects = effects
        self.workflows = workflows or {}  # their escalation rules bound to tools are checked before each call
        self.autonomy = autonomy  # the agent's effective level per workflow (None: agents.yaml's)
        # Fault injection for crash drills: called with the tool's name before its effect runs / once it is recorded.
        self.before_effect = before_effect
        self.on_effect_recorded = on_effect_recorded
        # Each step's tape: a ``Recorder`` (live), or a recording's ``Player`` (``handrail_worker.replay``).
        self.tapes = tapes or (lambda envelope: Recorder())

    async def run(self, envelope: HandoffEnvelope, guard: Guard) -> StepOutcome | Proposal:
        """Run the step ``envelope`` hands over (or carry it on after a decision); ``StepFailed`` or
        ``TaskHalted`` if it cannot finish, a ``Proposal`` when it stopped before a call a person must approve."""
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.agent.name,
            "handrail.task_id": envelope.task_id,
            "handrail.workflow": envelope.workflow,
            "handrail.step": envelope.step,
            "handrail.context_hash.in": envelope.context_hash,
        }
        with tracer().start_as_current_span(f"invoke_agent {self.agent.name}", attributes=attributes) as span:
            try:
                outcome = await self._run_step(envelope, guard)
            except TaskHalted as exc:
                span.set_attribute("error.type", exc.error_type)
                raise
            except _Stopped as stopped:
                span.set_attribute("handrail.awaiting_approval", stopped.proposal.call.tool)
                return stopped.proposal
            span.set_attribute("gen_ai.usage.input_tokens", outcome.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", outcome.usage.output_tokens)
            return outcome

    async def _run_step(self, envelope: HandoffEnvelope, guard: Guard) -> StepOutcome:
        agent = self.agent
        await guard.start()
        next_index = itertools.count(1).__next__  # one index per model attempt and tool call: reservation ids
        resume = envelope.resume
        view = view_for(self.workflows.get(envelope.workflow), envelope.step, envelope.context)
        provider, model = self.overrides.for_step(envelope)  # a forked task's model, else the agent's chain
        span = {"handrail.prompt": "", "handrail.task_id": envelope.task_id}
        span["handrail.step"] = envelope.step
        if resume is None:
            system, prompt_ref = await self._system_prompt(envelope, view.context)
            user = json.dumps({"goal": envelope.goal, "step": envelope.step, "context": view.context})
            step = _Step([ChatMessage("system", system), ChatMessage("user", user)], prompt_ref)
            step.tape = self.tapes(envelope)
            step.view, step.window = view, self._window(guard, next_index, step, provider, model, span)
        else:
            step = _Step.resumed(resume.progress)
            step.tape = self.tapes(envelope)
            step.view, step.window = view, self._window(guard, next_index, step, provider, model, span)
            seen = resume.progress.context_seen
            step.window.restore(step.messages, seen.compactions if seen is not None else [])
            decided, *rest = [_call(c) for c in resume.progress.pending_calls]
            await self._carry_out(envelope, guard, next_index, step, decided, resume)
            await self._run_calls(envelope, guard, next_index, step, rest, model_text=None)
        specs = self.tools.specs(agent.tools)
        span["handrail.prompt"] = step.prompt_ref
        tally, window = step.tally, step.window
        while step.turns < agent.limits.max_turns:
            step.turns += 1
            prompt = await window.fit(step.messages, specs, step.turns)
            request = ModelRequest(model=model, messages=prompt.messages, tools=specs)
            reply = await self._ask(provider, request, prompt, guard, next_index, step, span, step.prompt_ref)
            messages = step.messages
            if reply.answer is not None and (problems := self._plan_problems(envelope, reply.answer)):
                # An orchestrating step's plan that cannot run: the model is told why, as for a bad tool call.
                self._correct(tally, f"plan_rejected: {'; '.join(problems)}")
                messages.append(ChatMessage("assistant", reply.raw_text or json.dumps(reply.answer)))
                messages.append(ChatMessage("user", plan_correction(problems)))
                continue
            if reply.answer is not None:
                usage, seen = tally.usage(), step.seen()
                return StepOutcome(reply.answer, reply.confidence, step.decisions, usage, seen, step.recording())
            if not reply.tool_calls:
                correction = reply_correction(reply)
                self._correct(tally, f"{correction.code}: {correction.message}")
                if reply.raw_text:
                    messages.append(ChatMessage("assistant", reply.raw_text))  # the model sees what it wrote
                messages.append(ChatMessage("user", correction.as_message()))
                continue
            messages.append(ChatMessage("assistant", tool_calls=reply.tool_calls))
            await self._run_calls(
                envelope, guard, next_index, step, list(reply.tool_calls), model_text=reply.raw_text or None
            )
        raise TaskHalted(
            f"agent {agent.name!r} gave no answer within its {agent.limits.max_turns} model calls per step",
            error_type="turns_exhausted",
            task_id=envelope.task_id,
        )

    def _plan_problems(self, envelope: HandoffEnvelope, answer: dict[str, Any]) -> list[str]:
        """What is wrong with the plan ``answer`` is, when the step orchestrates (nothing for other steps)."""
        workflow = self.workflows.get(envelope.workflow)
        spec = workflow.hop(envelope.step) if workflow is not None else None
        if spec is None or not spec.orchestrates:
            return []
        return plan_problems(answer, spec, remaining_steps(envelope.budget))

    async def _ask(
        self,
        provider: ModelProvider,
        request: ModelRequest,
        prompt: Prompt,
        guard: Guard,
        next_index: Callable[[], int],
        step: _Step,
        span: dict[str, str],
        prompt_ref: str,
    ) -> ModelReply:
        """One model call through the guard (every attempt reserved with ``prompt``'s count), tallied."""
        with observing(_GuardAttempts(guard, next_index, prompt, prompt_ref), TracingObserver(span)):
            reply = await step.tape.model(request, lambda: provider.complete(request))
        tally = step.tally
        for attempt in reply.attempts:
            tally.model_calls += 1
            tally.input_tokens += attempt.input_tokens
            tally.output_tokens += attempt.output_tokens
            tally.cost_usd += attempt.cost_usd
            step.decisions.append(_model_decision(attempt, prompt_ref))
        return reply

    def _window(
        self,
        guard: Guard,
        next_index: Callable[[], int],
        step: _Step,
        provider: ModelProvider,
        model: str,
        span: dict[str, str],
    ) -> ContextWindow:
        """The step's context window; its ``summarise`` policy asks the agent's model, through the guard."""
        budget = self.agent.context

        async def summarise(previous: str | None, turns: list[ChatMessage]) -> str:
            request = summary_request(model, previous, turns, budget.summary_max_tokens)
            prompt = Prompt(request.messages, [], self.counters)
            text = summary_text(
                await self._ask(provider, request, prompt, guard, next_index, step, span, SUMMARY_PROMPT)
            )
            if text is None:
                raise TaskHalted(
                    f"agent {self.agent.name!r}: the model wrote no summary of its earlier turns",
                    error_type="compaction_failed",
                )
            return text

        return ContextWindow(budget, self.counters, model, self.agent.limits.max_output_tokens, summarise=summarise)

    async def _run_calls(
        self,
        envelope: HandoffEnvelope,
        guard: Guard,
        next_index: Callable[[], int],
        step: _Step,
        calls: list[ToolCall],
        *,
        model_text: str | None,
    ) -> None:
        """Run the calls of one model turn in order; stop (``_Stopped``) before one a person must approve."""
        level = await self._level(envelope.workflow) if calls else self.agent.autonomy
        for position, call in enumerate(calls):
            proposed = self._needs_approval(envelope, step, call, model_text, level)
            if proposed is not None:
                raise _Stopped(Proposal(proposed, step.progress(calls[position:]), step.recording()))
            with tracer().start_as_current_span(
                f"execute_tool {call.name}", attributes=_tool_attributes(call.name, envelope)
            ) as tool_span:
                observation, decision = await self._call_tool(envelope, guard, next_index, call, step)
                if decision.outcome != "ok":
                    tool_span.set_attribute("error.type", (decision.error or decision.outcome).split(":")[0])
            self._record(step, call, observation, decision)

    def _record(self, step: _Step, call: ToolCall, observation: dict[str, Any], decision: Decision) -> None:
        step.decisions.append(decision)
        TOOL_CALLS.labels(self.agent.name, labels.tool(decision.name), decision.outcome).inc()
        if decision.outcome == "rejected":
            self._correct(step.tally, decision.error or "rejected tool call")
        elif decision.outcome != "short_circuited":
            step.tally.tool_calls += 1
            if (decision.error or "").startswith(("invalid_result", "tool_invalid_input")):
                self._correct(step.tally, decision.error or "invalid tool result")  # the model must do without it
        content = observation_text(call.name, observation, self.agent.deny_patterns)  # untrusted data, screened
        step.messages.append(ChatMessage("tool", content, tool_call_id=call.id, name=call.name))

    async def _level(self, workflow: str) -> Autonomy:
        """The agent's effective autonomy in ``workflow`` (read at most a few seconds ago)."""
        if self.autonomy is None:
            return self.agent.autonomy
        return await self.autonomy.level(self.agent.name, workflow)

    def _needs_approval(
        self, envelope: HandoffEnvelope, step: _Step, call: ToolCall, model_text: str | None, level: Autonomy
    ) -> ProposedCall | None:
        """The proposal of ``call`` when a person must approve it first; None to make it now.

        A call that will be rejected (unknown tool, bad arguments) is not proposed: the model
        hears what is wrong with it first. A call people approved in this step runs.
        """
        name, args = call.name, call.arguments
        if arguments_correction(call) or self.tools.check_call(name, args, self.agent.tools) is not None:
            return None
        key = idempotency_key(envelope, name, args)
        tool = self.tools.get(name)
        assert tool is not None  # check_call vouched for it
        if key in step.approved:
            return None
        escalation = approval_for_call(
            self.workflows.get(envelope.workflow), self.agent, envelope.step, tool.spec, args, envelope.context, level
        )
        if escalation is None:
            return None
        return ProposedCall(
            call_id=call.id,
            tool=name,
            arguments=args,
            args_hash=sha256_hex(canonical_json(args)),
            idempotency_key=key,
            model_reason=model_text,
            why=escalation.reason,
            trigger=escalation.trigger.value,
            rule=escalation.rule.name if escalation.rule is not None else None,
            on_reject=tool.spec.on_reject,
        )

    async def _carry_out(
        self,
        envelope: HandoffEnvelope,
        guard: Guard,
        next_index: Callable[[], int],
        step: _Step,
        call: ToolCall,
        resume: StepResume,
    ) -> None:
        """The call a person decided on: run it as approved (edited arguments included), or tell the model no."""
        if resume.decision == "refused":
            refusal = ToolCallError(
                "refused_by_reviewer",
                call.name,
                f"a person refused this call ({', '.join(resume.by)}): {resume.reason or 'no reason given'}; "
                "do not make it again - answer without it, or propose something else",
            )
            decision = Decision(
                kind="tool_call",
                name=call.name,
                outcome="rejected",
                args_hash=sha256_hex(canonical_json(call.arguments)) if isinstance(call.arguments, dict) else None,
                error=f"{refusal.code}: {refusal.message}",
                latency_ms=0.0,
            )
            step.decisions.append(decision)
            TOOL_CALLS.labels(self.agent.name, labels.tool(call.name), "refused").inc()
            content = observation_text(call.name, refusal.as_observation())
            step.messages.append(ChatMessage("tool", content, tool_call_id=call.id, name=call.name))
            return
        approved = ToolCall(call.id, call.name, resume.arguments)
        if resume.arguments != call.arguments:  # edited: the conversation shows the call that really runs
            step.messages = [_with_arguments(m, approved) for m in step.messages]
        step.approved.add(idempotency_key(envelope, approved.name, approved.arguments))
        with tracer().start_as_current_span(
            f"execute_tool {approved.name}", attributes=_tool_attributes(approved.name, envelope)
        ) as tool_span:
            tool_span.set_attribute("handrail.review_id", resume.review_id)
            observation, decision = await self._call_tool(envelope, guard, next_index, approved, step)
        self._record(step, approved, observation, decision)

    async def _system_prompt(self, envelope: HandoffEnvelope, context: dict[str, Any]) -> tuple[str, str]:
        """The system message and the prompt version it came from (the active one, read at every step);
        ``context`` is what of the task context the step's view shows."""
        agent = self.agent
        if self.prompts is None:
            return f"You are {agent.name}. {agent.purpose} (prompt {agent.prompt})", agent.prompt
        template = await prompt_for(self.prompts, agent, envelope)
        scope = step_scope(
            agent=agent.name,
            purpose=agent.purpose,
            tools=agent.tools,
            workflow=envelope.workflow,
            goal=envelope.goal,
            step=envelope.step,
            context=context,
        )
        return template.render(scope), template.ref

    async def _call_tool(
        self, envelope: HandoffEnvelope, guard: Guard, next_index: Callable[[], int], call: ToolCall, step: _Step
    ) -> tuple[dict[str, Any], Decision]:
        index = next_index()
        started = time.perf_counter()
        name, args = call.name, call.arguments
        args_hash = sha256_hex(canonical_json(args)) if isinstance(args, dict) else None
        error = arguments_correction(call) or self.tools.check_call(name, args, self.agent.tools)
        if error is not None:
            return error.as_observation(), Decision(
                kind="tool_call",
                name=name,
                outcome="rejected",
                args_hash=args_hash,
                error=f"{error.code}: {error.message}",
                latency_ms=_ms_since(started),
            )
        tool = self.tools.get(name)
        # check_call vouched for both
        assert tool is not None
        assert args_hash is not None
        key = idempotency_key(envelope, name, args)
        context = ToolContext(task_id=envelope.task_id, step=envelope.step, idempotency_key=key)
        policy = self.agent.tool_policy(name)  # retries, timeout, what a failure of each kind does
        limited = bounded(tool, policy.timeout_s)
        attempts = ToolCallAttempts(guard, next_index, self.agent.name, envelope.task_id)
        tape = step.tape
        ran = await attempts.run(
            index,
            tool.spec,
            args_hash,
            policy,
            lambda: tape.tool(name, args_hash, lambda: self._run(limited, args, context, envelope)),
        )
        if isinstance(ran, ToolCallError):
            tape.refused(name, args_hash, ran)
            return ran.as_observation(), Decision(
                kind="tool_call",
                name=name,
                outcome="short_circuited",
                args_hash=args_hash,
                error=f"{ran.code}: {ran.message}",
                latency_ms=_ms_since(started),
            )
        if isinstance(ran, GaveUp):
            return ran.error.as_observation(), Decision(
                kind="tool_call",
                name=name,
                outcome="error",
                args_hash=args_hash,
                error=f"{ran.error_type}: {ran.error.message}",
                latency_ms=_ms_since(started),
            )
        granted, result = ran.ticket, ran.result
        invalid = self.tools.check_result(name, result)
        if invalid is not None:
            # It ran (and is paid for), but what it said must not reach the model or the next step as if true.
            await guard.after_call(granted, "error", "invalid_result", cost_usd=tool.spec.cost_usd)
            TOOL_RESULTS_INVALID.labels(self.agent.name, labels.tool(name)).inc()
            return invalid.as_observation(), Decision(
                kind="tool_call",
                name=name,
                outcome="error",
                args_hash=args_hash,
                error=f"invalid_result: {invalid.message}",
                latency_ms=_ms_since(started),
            )
        await guard.after_call(granted, "ok", cost_usd=tool.spec.cost_usd)
        return result, Decision(
            kind="tool_call", name=name, outcome="ok", args_hash=args_hash, latency_ms=_ms_since(started)
        )

    async def _run(
        self, tool: Tool, args: dict[str, Any], context: ToolContext, envelope: HandoffEnvelope
    ) -> dict[str, Any]:
        spec, run = tool.spec, tool.run
        if not spec.side_effect or self.effects is None:
            result: dict[str, Any] = await run(args, context)
            return result
        claimed = await self.effects.claim(envelope.task_id, context.idempotency_key, envelope.message_id)
        if claimed.claim == Claim.RECORDED:
            assert claimed.result is not None
            return claimed.result  # it ran before this redelivery: never twice
        if claimed.claim == Claim.IN_DOUBT and tool.lookup is not None:
            # An earlier attempt died while the effect ran: its target knows, by the key, whether it happened.
            found = await tool.lookup(context)
            if found is not None:
                await self.effects.record(envelope.task_id, context.idempotency_key, found)
                return found
            # It did not happen: run it now (the key still reaches the target, which dedupes on it).
        elif claimed.claim == Claim.IN_DOUBT:
            raise TaskHalted(
                f"{spec.name} may or may not have run (an earlier attempt died while it ran); "
                "it is not repeated: a person must check",
                error_type="side_effect_in_doubt",
                task_id=envelope.task_id,
            )
        if self.before_effect is not None:
            self.before_effect(spec.name)
        try:
            result = await run(args, context)
        except ToolFailure:
            await self.effects.release(envelope.task_id, context.idempotency_key)  # it declared it did nothing
            raise
        await self.effects.record(envelope.task_id, context.idempotency_key, result)
        if self.on_effect_recorded is not None:
            self.on_effect_recorded(spec.name)
        return result

    def _correct(self, tally: _Tally, last: str) -> None:
        tally.corrections += 1
        limit = self.agent.limits.max_tool_corrections
        if tally.corrections > limit:
            raise TaskHalted(
                f"agent {self.agent.name!r} needed more than {limit} corrections; last: {last}",
                error_type="too_many_corrections",
            )


#: The ``prompt`` a summarising call's decision names (it runs with no prompt file).
SUMMARY_PROMPT = "handrail:summarise"


class _Stopped(Exception):
    """Unwinds a step that stopped before a call a person must approve."""

    def __init__(self, proposal: Proposal) -> None:
        super().__init__(proposal.call.tool)
        self.proposal = proposal


def idempotency_key(envelope: HandoffEnvelope, tool: str, args: Any) -> str:
    """A call's key: the task, the step, the tool and the canonical arguments - nothing that changes on redelivery."""
    return sha256_hex(canonical_json([envelope.task_id, envelope.step, tool, args]))


def _message_dict(message: ChatMessage) -> dict[str, Any]:
    body = asdict(message)
    body["tool_calls"] = [_call_dict(c) for c in message.tool_calls]
    return {k: v for k, v in body.items() if v not in (None, [], "") or k == "content"}


def _message(body: dict[str, Any]) -> ChatMessage:
    calls = tuple(_call(c) for c in body.get("tool_calls", []))
    return ChatMessage(body["role"], body.get("content", ""), calls, body.get("tool_call_id"), body.get("name"))


def _call_dict(call: ToolCall) -> dict[str, Any]:
    return {k: v for k, v in asdict(call).items() if v is not None}


def _call(body: dict[str, Any]) -> ToolCall:
    return ToolCall(body["id"], body["name"], body.get("arguments"), body.get("arguments_error"))


def _with_arguments(message: ChatMessage, call: ToolCall) -> ChatMessage:
    """``message`` with the tool call of ``call``'s id replaced by ``call``."""
    if not any(c.id == call.id for c in message.tool_calls):
        return message
    calls = tuple(call if c.id == call.id else c for c in message.tool_calls)
    return ChatMessage(message.role, message.content, calls, message.tool_call_id, message.name)


def _tool_attributes(tool: str, envelope: HandoffEnvelope) -> dict[str, str]:
    return {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "handrail.task_id": envelope.task_id,
        "handrail.step": envelope.step,
    }


def _model_decision(attempt: Attempt, prompt_ref: str) -> Decision:
    failed = attempt.outcome != "ok"
    return Decision(
        kind="model_call",
        name=f"{attempt.provider}/{attempt.model}",
        outcome="error" if failed else "ok",
        error=f"{attempt.outcome}: {attempt.error_type}" if failed else None,
        latency_ms=attempt.latency_ms,
        input_tokens=attempt.input_tokens,
        output_tokens=attempt.output_tokens,
        prompt=prompt_ref,
    )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
