"""In-process tools are plugins: what installed packages register under ``handrail.tools``."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from handrail.errors import ContractError
from handrail.tools import Tool, ToolSpec, registry
from handrail.tools.registry import TOOLS_ENTRY_POINTS, default_registry

HERE = __name__


async def _echo(args: dict[str, Any], ctx: object = None) -> dict[str, Any]:
    return dict(args)


def _tool(name: str) -> Tool:
    return Tool(ToolSpec(name=name, description="echo", args_schema={"type": "object"}), _echo)


def good(data_dir: Path) -> Iterable[Tool]:
    return [_tool("echo"), _tool(f"files_in_{data_dir.name}")]


def clashing(data_dir: Path) -> Iterable[Tool]:
    return [_tool("echo")]


def not_tools(data_dir: Path) -> Iterable[object]:
    return ["echo"]


def broken(data_dir: Path) -> Iterable[Tool]:
    raise RuntimeError("the billing API key is not set")


def plugins(monkeypatch: pytest.MonkeyPatch, **points: str) -> None:
    """Make ``points`` (name -> function of this module) the installed ``handrail.tools`` entry points."""
    installed = [EntryPoint(name, f"{HERE}:{fn}", TOOLS_ENTRY_POINTS) for name, fn in points.items()]

    def entry_points(*, group: str) -> list[EntryPoint]:
        return installed if group == TOOLS_ENTRY_POINTS else []

    monkeypatch.setattr(registry, "entry_points", entry_points)


def test_the_installed_demo_registers_its_expense_tools_and_the_runtime_names_none() -> None:
    assert default_registry().names() == {"lookup_employee", "convert_currency", "check_policy", "record_decision"}


def test_every_plugin_s_tools_are_registered_with_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    plugins(monkeypatch, acme="good")
    assert default_registry(Path("/srv/ledgers")).names() == {"echo", "files_in_ledgers"}


@pytest.mark.parametrize(
    ("points", "says"),
    [
        (
            {"billing": "broken"},
            "tool plugin 'billing' (tests.libs.tools.test_plugins:broken) did not load: "
            "RuntimeError: the billing API key is not set",
        ),
        (
            {"billing": "missing_function"},
            "tool plugin 'billing' (tests.libs.tools.test_plugins:missing_function) did not load: AttributeError",
        ),
        (
            {"billing": "not_tools"},
            "tool plugin 'billing' (tests.libs.tools.test_plugins:not_tools) gave str, not a handrail.tools.Tool",
        ),
        (
            {"a": "good", "b": "clashing"},
            "tool plugin 'b' (tests.libs.tools.test_plugins:clashing): tool 'echo' is registered twice",
        ),
    ],
)
def test_a_plugin_that_does_not_load_stops_the_start_naming_the_plugin(
    monkeypatch: pytest.MonkeyPatch, points: dict[str, str], says: str
) -> None:
    plugins(monkeypatch, **points)
    with pytest.raises(ContractError) as raised:
        default_registry()
    assert says in str(raised.value)
