"""Counting prompts: OpenAI's encodings offline (from the wheel), the estimate for every other model."""

from __future__ import annotations

from handrail.llm import ChatMessage, ToolCall
from handrail.llm.models import ModelCatalogue, ModelSpec, ProviderKind
from handrail.llm.tokens import ESTIMATED, counter_for, counters, estimate_tokens
from handrail.tools import default_registry


def _openai(name: str, **fields: object) -> ModelSpec:
    return ModelSpec.model_validate({"name": name, "provider": "openai", "base_url": "http://llm", **fields})


def test_openai_models_are_counted_with_their_own_encoding_offline() -> None:
    gpt4 = counter_for(_openai("gpt-4"))
    assert gpt4.encoding == "cl100k_base"
    # tiktoken's own example: "tiktoken is great!" is 6 tokens in cl100k_base.
    assert gpt4.count_text("tiktoken is great!") == 6
    gpt4o = counter_for(_openai("fast", api_model="gpt-4o-mini"))
    assert gpt4o.encoding == "o200k_base" and gpt4o.count_text("hello world") == 2
    # CJK is where characters / 4 was furthest off: o200k counts every character or so.
    assert gpt4o.count_text("请审核这笔报销申请") > len("请审核这笔报销申请") // 4 * 2


def test_models_without_a_known_tokenizer_get_the_estimate() -> None:
    assert counter_for(_openai("llama3-local")).encoding == "estimate"
    anthropic = ModelSpec(name="claude", provider=ProviderKind.ANTHROPIC, base_url="http://llm")
    assert counter_for(anthropic) is ESTIMATED
    assert counter_for(_openai("gpt-4o", tokenizer="estimate")) is ESTIMATED
    assert counter_for(_openai("my-gpt", tokenizer="cl100k_base")).encoding == "cl100k_base"
    assert counters(ModelCatalogue())("scripted") is ESTIMATED
    assert counters(None)("anything") is ESTIMATED


def test_the_estimate_is_utf8_bytes_over_three_rounded_up() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 2
    assert estimate_tokens("请审核") == 3  # 9 bytes


def test_a_prompt_counts_messages_tool_calls_framing_and_tools() -> None:
    counter = counter_for(_openai("gpt-4o"))
    call = ToolCall("c1", "lookup_employee", {"employee_id": "E100"})
    messages = [ChatMessage("system", "be brief"), ChatMessage("assistant", tool_calls=(call,))]
    specs = default_registry().specs(["lookup_employee"])
    bare = counter.prompt(messages)
    assert bare == sum(counter.message(m) for m in messages) + 3
    assert counter.message(messages[1]) > 3  # the call's name and arguments count
    assert counter.prompt(messages, specs) == bare + counter.tools(specs) and counter.tools(specs) > 10
