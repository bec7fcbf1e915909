"""What runs in a cluster: one workload per platform service and one per agent, from the contracts.

A workload carries its identity (Kafka principal, ServiceAccount and signer), its
entrypoint arguments, its HTTP port and the consumer group its lag is measured on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from handrail.bus import acl
from handrail.contracts import AgentSpec, Contracts
from handrail.errors import ContractError
from handrail.signing.policy import CIRCUIT_BREAKER, HUMAN_REVIEW, ROUTER, VALIDATOR

#: Models served by the process itself; any other model is reached over HTTPS.
LOCAL_MODELS = frozenset({"scripted"})
#: Kubernetes object names (DNS-1035 labels): the agent name ends up in Service names.
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Workload:
    """One Deployment: the service it runs, as whom, on which port."""

    name: str
    component: str
    args: tuple[str, ...]
    port: int
    principal: str
    signer: str
    consumer_group: str | None
    agent: AgentSpec | None = None

    @property
    def mcp_egress_ports(self) -> list[int]:
        """The TCP ports of its agent's streamable-HTTP MCP servers (stdio servers run in its own container)."""
        if self.agent is None:
            return []
        urls = [urlsplit(s.url) for s in self.agent.mcp_servers if s.url is not None]
        return sorted({u.port or (443 if u.scheme == "https" else 80) for u in urls})

    @property
    def needs_model_egress(self) -> bool:
        """Whether its model chain leaves the cluster (HTTPS to a model provider)."""
        return self.agent is not None and any(m.split("/")[0] not in LOCAL_MODELS for m in self.agent.model_chain)


def workloads(contracts: Contracts) -> list[Workload]:
    """Every workload of a deployment with these contracts: the services, then one worker per agent."""
    services = [
        Workload("router", "router", ("router",), 8081, acl.ROUTER, ROUTER, acl.ROUTER),
        Workload("validator", "validator", ("validator",), 8083, acl.VALIDATOR, VALIDATOR, acl.VALIDATOR),
        Workload(
            "circuit-breaker", "circuit-breaker", ("circuit-breaker",), 8085,
            acl.CIRCUIT_BREAKER, CIRCUIT_BREAKER, acl.CIRCUIT_BREAKER,
        ),
        # Reviewers reach it over HTTP; it scales on CPU, not on lag.
        Workload("human-review", "human-review", ("human-review",), 8086, acl.HUMAN_REVIEW, HUMAN_REVIEW, None),
    ]  # fmt: skip
    workers = []
    for name, agent in sorted(contracts.agents.items()):
        if not _DNS_LABEL.match(f"worker-{name}") or len(f"worker-{name}") > 63:
            raise ContractError(
                f"agents.yaml: agent {name!r}: its Kubernetes name 'worker-{name}' is not a DNS label "
                "(lowercase letters, digits and '-', at most 56 characters for the agent)"
            )
        principal = acl.agent_principal(name)
        workers.append(
            Workload(f"worker-{name}", "worker-agent", ("worker-agent", "--agent", name), 8082, principal, name,
                     principal, agent)
        )  # fmt: skip
    return services + workers
