"""The AI system inventory: every agent, who owns it, what it may do and how autonomously.

Built only from the contracts (``agents.yaml``, ``workflows.yaml``), the tool
registry and the Kafka ACLs, so it can never disagree with what actually runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from handrail.bus.acl import agent_principal, principals
from handrail.contracts import Contracts
from handrail.tools import ToolRegistry
from handrail.topics import Topics


@dataclass(frozen=True)
class ToolUse:
    """One tool an agent may call."""

    name: str
    description: str
    side_effect: bool
    requires_approval: bool


@dataclass(frozen=True)
class InventoryEntry:
    """One agent, as an auditor or a risk register needs to see it."""

    agent: str
    owner: str
    purpose: str
    model_chain: list[str]
    prompt: str
    tools: list[ToolUse]
    #: Topics it reads and writes (its Kafka ACLs), and what its tools change outside the platform.
    data_access: dict[str, list[str]]
    autonomy: str
    risk_class: str
    confidence_floor: float
    limits: dict[str, Any]
    workflows: list[str]
    kafka_principal: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inventory(contracts: Contracts, tools: ToolRegistry, topics: Topics | None = None) -> list[InventoryEntry]:
    """One entry per agent, sorted by name."""
    topics = topics or Topics()
    by_name = {p.name: p for p in principals(contracts, topics)}
    entries = []
    for name, agent in sorted(contracts.agents.items()):
        uses = []
        for tool_name in agent.tools:
            tool = tools.get(tool_name)
            spec = tool.spec if tool is not None else None
            uses.append(
                ToolUse(
                    name=tool_name,
                    description=spec.description if spec else "(not registered)",
                    side_effect=bool(spec and spec.side_effect),
                    requires_approval=bool(spec and spec.requires_approval),
                )
            )
        principal = by_name[agent_principal(name)]
        steps = [f"{w.name}/{s.name}" for w in contracts.workflows.values() for s in w.steps if name in s.agents]
        entries.append(
            InventoryEntry(
                agent=name,
                owner=agent.owner,
                purpose=agent.purpose,
                model_chain=list(agent.model_chain),
                prompt=agent.prompt,
                tools=uses,
                data_access={
                    "reads": list(principal.reads),
                    "writes": list(principal.writes),
                    "side_effects": [u.name for u in uses if u.side_effect],
                },
                autonomy=agent.autonomy.value,
                risk_class=agent.risk_class,
                confidence_floor=agent.confidence_floor,
                limits=agent.limits.model_dump(),
                workflows=sorted(steps),
                kafka_principal=f"User:{principal.name}",
            )
        )
    return entries
