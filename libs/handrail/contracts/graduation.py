"""When an agent earns more autonomy, or loses some: the graduation rule in ``config/autonomy.yaml``.

Per (agent, workflow), the reviews requested since its level last took effect
(at most ``window_reviews`` of the latest) are counted by how they ended. A
level listed under ``promote`` moves one level up (approval-gates ->
exception-based -> audit-based) once at least ``min_reviews`` were counted and
at least ``min_approved_unchanged_ratio`` of them were approved unchanged;
``demote`` moves one level down when one of its ratios is exceeded. With
``auto: false`` the rule only recommends (``handrail autonomy status``, metrics);
with ``auto: true`` the human-review service applies it.

The file is optional: without it nothing is recommended. Validated at start-up
with the rest of the contracts: an unknown key or a bad value stops the service
with a message naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from handrail.contracts.agents import Autonomy
from handrail.contracts.files import load_optional
from handrail.errors import ContractError

GRADUATION_FILE = "autonomy.yaml"
#: The levels from least to most autonomous: promotion moves right, demotion left, one step at a time.
LADDER: tuple[Autonomy, ...] = (Autonomy.APPROVAL_GATES, Autonomy.EXCEPTION_BASED, Autonomy.AUDIT_BASED)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Promotion(_Strict):
    """What moving up from one level takes."""

    min_reviews: int = Field(ge=1, description="Reviews counted at least.")
    min_approved_unchanged_ratio: float = Field(gt=0, le=1, description="Share approved without an edit, at least.")


class Demotion(_Strict):
    """What moves an agent one level down; a ratio left out is not checked."""

    min_reviews: int = Field(default=20, ge=1, description="Reviews counted before any ratio is judged.")
    max_rejected_ratio: float | None = Field(default=None, ge=0, lt=1)
    max_edited_ratio: float | None = Field(default=None, ge=0, lt=1)
    max_timed_out_ratio: float | None = Field(default=None, ge=0, lt=1)

    def limits(self) -> dict[str, float]:
        """Outcome name -> the ratio it must not exceed, for the ratios that are set."""
        pairs = {
            "rejected": self.max_rejected_ratio,
            "edited": self.max_edited_ratio,
            "timed_out": self.max_timed_out_ratio,
        }
        return {outcome: limit for outcome, limit in pairs.items() if limit is not None}


class GraduationRule(_Strict):
    """The whole rule: promotions by the level they start from, the demotion, and whether to apply them."""

    auto: bool = Field(default=False, description="Apply what the rule recommends (else recommend only).")
    window_reviews: int = Field(default=500, ge=1, description="Count at most this many of the latest reviews.")
    promote: dict[Autonomy, Promotion] = Field(default_factory=dict)
    demote: Demotion | None = None
    source: str = Field(default=GRADUATION_FILE, description="Where it was read from, for messages.")


def load_graduation(config_dir: Path) -> GraduationRule | None:
    """Read ``config_dir/autonomy.yaml``; ``None`` when there is no file."""
    path = config_dir / GRADUATION_FILE
    rule = load_optional(path, GraduationRule, "'auto', 'window_reviews', 'promote' and/or 'demote'")
    if rule is None:
        return None
    if LADDER[-1] in rule.promote:
        raise ContractError(f"{path}: field 'promote.{LADDER[-1].value}': there is no level above {LADDER[-1].value}")
    for level, promotion in rule.promote.items():
        if promotion.min_reviews > rule.window_reviews:
            raise ContractError(
                f"{path}: field 'promote.{level.value}.min_reviews': {promotion.min_reviews} is more than "
                f"'window_reviews' ({rule.window_reviews}), so it could never be reached"
            )
    if rule.demote is not None:
        if not rule.demote.limits():
            raise ContractError(
                f"{path}: field 'demote': set at least one of max_rejected_ratio, max_edited_ratio, max_timed_out_ratio"
            )
        if rule.demote.min_reviews > rule.window_reviews:
            raise ContractError(
                f"{path}: field 'demote.min_reviews': {rule.demote.min_reviews} is more than "
                f"'window_reviews' ({rule.window_reviews}), so it could never be reached"
            )
    return rule
