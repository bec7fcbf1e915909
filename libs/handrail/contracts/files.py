"""Reading an optional contract file (``routing.yaml``, ``autonomy.yaml``) into its model, with messages naming the
file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from handrail.errors import ContractError

M = TypeVar("M", bound=BaseModel)


def load_optional(path: Path, model: type[M], expected: str) -> M | None:
    """``path`` as ``model``, its ``source`` field set to the path; None when there is no such file.

    A file of only comments is the model's defaults. ``expected`` says what the top level holds,
    for the message when it is not a mapping.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ContractError(f"{path}: expected a mapping with {expected}")
    if "source" in raw:
        raise ContractError(f"{path}: unknown top-level keys ['source']")
    try:
        return model.model_validate({**raw, "source": str(path)})
    except ValidationError as exc:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in e['loc']) or '(file)'!r}: {e['msg']}" for e in exc.errors()
        )
        raise ContractError(f"{path}: {problems}") from None
