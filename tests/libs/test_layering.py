"""The runtime apart from the tooling: nothing a service imports reaches the CLI, the launcher, the demo or deploy."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLING = ("handrail_cli", "handrail_dev", "handrail_deploy")
RUNTIME = [ROOT / "libs" / "handrail", *sorted((ROOT / "services").glob("*/handrail_*"))]


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_runtime_and_the_services_import_nothing_of_the_tooling() -> None:
    files = [path for package in RUNTIME for path in package.rglob("*.py")]
    assert len(files) > 100, f"the runtime's files were not found under {RUNTIME}"
    reaching = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in imported(path)
        if name.split(".")[0] in TOOLING
    }
    assert not reaching, "\n".join(sorted(reaching))


def test_the_check_sees_a_tooling_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from handrail_dev import expenses\n")
    assert "handrail_dev" in imported(module)
