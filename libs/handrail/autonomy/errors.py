"""What ``handrail.autonomy`` raises (the tree is in the package docstring)."""

from __future__ import annotations

from handrail.errors import HandrailError, RetryableError


class AutonomyError(HandrailError):
    """Root of every error this package raises on purpose."""


class UnknownTarget(AutonomyError):
    """The agent or the workflow is not in the contracts, or the agent runs no step of the workflow."""


class Unchanged(AutonomyError):
    """The change asked for would change nothing (already that level; no override to clear)."""


class Superseded(AutonomyError):
    """The level is no longer the one the change was decided on: another change came first."""


class ChangeInProgress(AutonomyError, RetryableError):
    """Another change of the same (agent, workflow) holds its lock right now; try again in a moment."""
