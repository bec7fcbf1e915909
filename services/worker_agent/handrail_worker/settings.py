"""Worker settings (``HANDRAIL_*``)."""

from __future__ import annotations

from pydantic import Field

from handrail.service import ServiceSettings


class WorkerSettings(ServiceSettings):
    """What a worker needs beyond the shared settings: which agent it runs."""

    agent: str = Field(min_length=1, description="The agent this process runs (one deployment per agent).")
    http_port: int = Field(default=8082, ge=0, le=65535)
    #: Run the agent's shadow (``handrail_worker.shadow``) instead of the agent.
    shadow: bool = False
    #: Fault injection for crash-recovery tests and drills: exit the process right
    #: after publishing a step's output and before its offset is committed.
    chaos_exit_after_publish: bool = False
    #: Fault injection: exit right after this side-effecting tool ran and its result was recorded.
    chaos_exit_after_tool: str | None = None
    #: Fault injection: exit right before this side-effecting tool runs (its call claimed, nothing done yet).
    chaos_exit_before_tool: str | None = None
