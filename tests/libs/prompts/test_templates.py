"""Prompt files and templates: strict parsing, dotted paths, clear errors naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from handrail.prompts import (
    PromptLibrary,
    PromptNotFound,
    PromptRenderError,
    PromptTemplate,
    PromptTemplateError,
    parse_ref,
    step_scope,
)

PROJECT_PROMPTS = Path(__file__).resolve().parents[3] / "config" / "prompts"
SCOPE = step_scope(
    agent="expense-intake",
    purpose="Gathers facts.",
    tools=["lookup_employee", "convert_currency"],
    workflow="expense-approval",
    goal="Decide on E100's claim",
    step="intake",
    context={"input": {"employee_id": "E100", "amount": 12.5}, "steps": {"intake": {"ok": True}}},
)


def test_dotted_paths_strings_and_json_values_render() -> None:
    template = PromptTemplate(
        "p", "1", "${agent} uses ${tools}; id=$input.employee_id amount=${input.amount} prior=${steps.intake} costs $$5"
    )
    assert template.render(SCOPE) == (
        'expense-intake uses lookup_employee, convert_currency; id=E100 amount=12.5 prior={"ok": true} costs $5'
    )
    assert template.variables == ["agent", "tools", "input.employee_id", "input.amount", "steps.intake"]


def test_a_stray_dollar_is_refused_with_its_line_and_column() -> None:
    with pytest.raises(PromptTemplateError, match=r"p@1: line 2, column 10: '\$' must start"):
        PromptTemplate("p", "1", "Hello.\nIt costs $5 a day.")


def test_an_unknown_variable_is_refused_naming_the_allowed_ones() -> None:
    allowed = r"unknown variable\(s\) \['employee'\]; a prompt may use \[.*'input'"
    with pytest.raises(PromptTemplateError, match=allowed):
        PromptTemplate("p", "1", "Hi ${employee}")


def test_a_missing_value_is_an_error_at_render_never_an_empty_string() -> None:
    template = PromptTemplate("p", "1", "id=${input.employee_id} dept=${input.department}")
    with pytest.raises(PromptRenderError, match=r"p@1: the step's context has no value for \$\{input.department\}"):
        template.render(SCOPE)


def test_every_shipped_prompt_is_valid_and_renders() -> None:
    library = PromptLibrary(PROJECT_PROMPTS)
    assert library.names() == [
        "expense-approver",
        "expense-intake",
        "risk-classifier",
        "vendor-checker",
        "vendor-writer",
    ]
    assert library.versions("expense-intake") == ["1", "2"]
    for name in library.names():
        for version in library.versions(name):
            assert "expense-intake" in library.load(name, version).render(SCOPE)


def test_versions_sort_naturally_and_missing_ones_are_listed(tmp_path: Path) -> None:
    for version in ("2", "10", "1.2", "1.10"):
        (tmp_path / "p").mkdir(exist_ok=True)
        (tmp_path / "p" / f"{version}.md").write_text(f"v{version}")
    (tmp_path / "p" / "notes.rst").write_text("ignored")
    library = PromptLibrary(tmp_path)
    assert library.versions("p") == ["1.2", "1.10", "2", "10"]
    with pytest.raises(PromptNotFound, match=r"prompt 'p' has no version '3' .*versions: \['1.2', '1.10', '2', '10'\]"):
        library.load("p", "3")
    with pytest.raises(PromptNotFound, match=r"no prompt 'q'.*prompts there: \['p'\]"):
        library.load("q", "1")


def test_a_bad_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "1.txt").write_text("costs $ 5")
    with pytest.raises(PromptTemplateError, match=str(tmp_path / "p" / "1.txt")):
        PromptLibrary(tmp_path).load("p", "1")


def test_an_edited_file_is_read_again(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    path = tmp_path / "p" / "1.md"
    path.write_text("one")
    library = PromptLibrary(tmp_path)
    assert library.load("p", "1").text == "one"
    path.write_text("two, longer")
    assert library.load("p", "1").text == "two, longer"


@pytest.mark.parametrize("ref", ["nameonly", "a@", "@1", "../etc@1", "a@../../x"])
def test_malformed_references_are_refused(ref: str) -> None:
    with pytest.raises(PromptNotFound, match="not of the form name@version"):
        parse_ref(ref)
