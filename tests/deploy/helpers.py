"""What the deploy tests share: the deploy commands mounted as `handrail` mounts them, and tool lookup."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import typer
from tests.fixtures.infra import unavailable

from handrail_cli import deploy

PROJECT_ROOT = Path(__file__).resolve().parents[2]

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(deploy.k8s_app, name="k8s")
app.add_typer(deploy.acl_app, name="acl")
app.add_typer(deploy.keys_app, name="keys")
app.add_typer(deploy.sasl_app, name="sasl")
app.command("inventory")(deploy.inventory_command)


def require_tool(name: str, package: str) -> str:
    """The path of ``name`` (installed by PyPI ``package`` into the venv); skip, or fail in CI, without it."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.is_file() else shutil.which(name)
    if path is None:
        unavailable(f"{name} not found: `pip install {package}` (a dev dependency)")
    return path
