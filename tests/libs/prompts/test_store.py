"""The active prompt version in Redis: activation checked first, switches seen at once, rollback."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from handrail.errors import StateUnavailable
from handrail.prompts import NothingToRollBack, PromptLibrary, PromptNotFound, PromptStore, PromptTemplateError
from handrail.state import connect_redis

PROJECT_PROMPTS = Path(__file__).resolve().parents[3] / "config" / "prompts"
DECLARED = "expense-intake@1"


@pytest_asyncio.fixture
async def store(redis_client: aioredis.Redis, tmp_path: Path) -> AsyncIterator[PromptStore]:
    shutil.copytree(PROJECT_PROMPTS, tmp_path / "prompts")
    yield PromptStore(PromptLibrary(tmp_path / "prompts"), redis_client, f"test-{uuid.uuid4().hex[:8]}:")


async def test_the_declared_version_applies_until_one_is_activated(store: PromptStore) -> None:
    assert await store.active_version("expense-intake") is None
    assert (await store.resolve(DECLARED)).ref == "expense-intake@1"


async def test_activation_takes_effect_at_the_next_resolve_and_rollback_undoes_it(store: PromptStore) -> None:
    switch = await store.activate("expense-intake", "2", declared="1", by="test")
    assert (switch.previous, switch.version, switch.changed) == ("1", "2", True)
    assert (await store.resolve(DECLARED)).ref == "expense-intake@2"
    assert await store.history("expense-intake") == ["1"]

    back = await store.rollback("expense-intake", by="test")
    assert (back.previous, back.version) == ("2", "1")
    assert (await store.resolve(DECLARED)).ref == "expense-intake@1"
    with pytest.raises(NothingToRollBack):
        await store.rollback("expense-intake")
    log = await store.changes("expense-intake")
    assert [(c["action"], c["version"], c["by"]) for c in log] == [("rollback", "1", "test"), ("activate", "2", "test")]


async def test_history_stacks_and_reactivating_the_active_version_changes_nothing(store: PromptStore) -> None:
    library = store.library
    (library.root / "expense-intake" / "3.md").write_text("You are ${agent}, third edition.")
    await store.activate("expense-intake", "2", declared="1")
    await store.activate("expense-intake", "3", declared="1")
    again = await store.activate("expense-intake", "3", declared="1")
    assert not again.changed
    assert await store.history("expense-intake") == ["2", "1"]
    assert (await store.rollback("expense-intake")).version == "2"
    assert (await store.rollback("expense-intake")).version == "1"


async def test_a_missing_version_is_refused_at_activation(store: PromptStore) -> None:
    with pytest.raises(PromptNotFound, match=r"prompt 'expense-intake' has no version '7'.*versions: \['1', '2'\]"):
        await store.activate("expense-intake", "7")
    assert await store.active_version("expense-intake") is None


async def test_a_broken_template_is_refused_at_activation_naming_file_and_line(store: PromptStore) -> None:
    bad = store.library.root / "expense-intake" / "3.md"
    bad.write_text("You are ${agent}.\nBudget: $100 per claim.\n")
    with pytest.raises(PromptTemplateError, match=rf"{bad}: line 2, column 9"):
        await store.activate("expense-intake", "3")
    assert await store.active_version("expense-intake") is None


async def test_rollback_to_a_version_whose_file_is_gone_is_refused(store: PromptStore) -> None:
    await store.activate("expense-intake", "2", declared="1")
    (store.library.root / "expense-intake" / "1.md").unlink()
    with pytest.raises(PromptNotFound):
        await store.rollback("expense-intake")
    assert await store.active_version("expense-intake") == "2"  # nothing moved


async def test_the_log_is_json_with_a_timestamp(store: PromptStore, redis_client: aioredis.Redis) -> None:
    await store.activate("expense-approver", "1", declared="1")
    raw = await redis_client.lindex(store._keys("expense-approver")[2], 0)
    entry = json.loads(raw)
    assert entry["action"] == "activate" and entry["at"]


async def test_an_unreachable_redis_is_state_unavailable(tmp_path: Path) -> None:
    redis = connect_redis("redis://127.0.0.1:9/0")  # nothing listens on the discard port
    try:
        store = PromptStore(PromptLibrary(PROJECT_PROMPTS), redis)
        with pytest.raises(StateUnavailable, match="read the active version of prompt expense-intake"):
            await store.resolve(DECLARED)
    finally:
        await redis.aclose()
