"""Least-privilege Kafka principals and their ACLs, rendered from the contracts.

Every service and every agent has its own principal (SASL/SCRAM-SHA-512 user).
A principal may read only the topics it consumes, with its own consumer group,
and write only the topics it produces (``DESIGN.md``, Services):

- ``handrail-agent-<name>`` reads ``agent.<name>`` (group ``handrail-agent-<name>``) and
  writes ``steps``, ``events`` and ``dlq``. It can never end a task (no ``results``), hand
  work to another agent, or write the audit trail: the validator records each step it
  verifies, in the agent's name and signed with its own key, so no agent can add to,
  rewrite or fork any task's record.
- ``handrail-router`` reads ``tasks`` and writes the agent topics of first steps,
  ``results``, ``dlq``, ``audit``; it cannot read any agent topic.
- ``handrail-validator`` reads ``steps`` and writes the agent topics of later steps,
  ``reviews.requested``, ``results``, ``dlq``, ``audit``.
- ``handrail-circuit-breaker`` reads ``events`` and ``results`` (completed tasks teach the agents'
  behavioural baselines; canaries count tasks per prompt version) and ``reviews.requested`` (a
  canary's review rate), and writes ``control``, ``events`` (a deviation from a baseline),
  ``reviews.requested``, ``audit``, ``dlq``; ``handrail-human-review`` reads the review topics and
  ``dlq`` (the task console's dead letters) and resumes tasks.
- ``handrail-submitter`` publishes tasks and reads results; ``handrail-operator`` reads
  everything under the prefix (watch, trace, dlq list) and writes ``control`` and ``audit``
  (halts and autonomy changes, signed with the operator's key) and the agent topics (``task
  resume|fork`` hand a step on from a task's checkpoint, signed with the same key; the
  receiving agent still checks it against the task's committed head); ``handrail-admin``
  creates topics.
- ``handrail-replayer`` is an operator replaying dead letters (``handrail dlq replay``): it reads
  ``dlq`` and writes back to the topics a replay goes to (``tasks``, the agent topics any step is
  handed to, ``steps``) and the replay's audit record. A principal of its own, so the everyday
  operator can never publish a task; what it sends is an original as it was
  dead-lettered, checked by its consumer as any message is (signature, hashes, ids).

Every service also reads ``audit``, ``results`` and ``control``, from the start and outside
any group: whichever first finds that Redis lost its state rebuilds it from them
(``handrail.recovery``). Workers never rebuild (they wait for a service to; their Redis
users may not write what a rebuild writes, ``handrail.state.acl``), so an agent reads
only its own topic: never the audit trail of tasks it never ran.

Why ``dlq`` for agents: every consumer must be able to park what it cannot
process, or a poison message wedges its partition; a dead letter ends nothing.
Producers run idempotent: since Kafka 3.0 ``WRITE`` on any topic is enough for
``InitProducerId`` (KIP-679), so no cluster-wide ``IDEMPOTENT_WRITE`` is granted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from handrail.contracts import Contracts
from handrail.topics import Topics

#: Principal names: ``User:<name>`` in ACLs, the SCRAM user name, the Kubernetes Secret suffix.
ROUTER = "handrail-router"
VALIDATOR = "handrail-validator"
CIRCUIT_BREAKER = "handrail-circuit-breaker"
HUMAN_REVIEW = "handrail-human-review"
SUBMITTER = "handrail-submitter"
OPERATOR = "handrail-operator"
REPLAYER = "handrail-replayer"
ADMIN = "handrail-admin"


def agent_principal(agent: str) -> str:
    """The principal (and consumer group) of agent ``agent``'s workers."""
    return f"handrail-agent-{agent}"


class Operation(StrEnum):
    """Kafka ACL operations Handrail grants (values are Kafka's ``AclOperation`` names)."""

    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    DESCRIBE = "DESCRIBE"
    DESCRIBE_CONFIGS = "DESCRIBE_CONFIGS"


class ResourceType(StrEnum):
    TOPIC = "TOPIC"
    GROUP = "GROUP"


class PatternType(StrEnum):
    LITERAL = "LITERAL"
    PREFIXED = "PREFIXED"


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW rule: ``principal`` may ``operation`` on a resource, from any host."""

    principal: str
    resource_type: ResourceType
    resource_name: str
    operation: Operation
    pattern_type: PatternType = PatternType.LITERAL

    @property
    def kafka_principal(self) -> str:
        return f"User:{self.principal}"


@dataclass(frozen=True)
class Principal:
    """One Kafka identity: what it consumes (in which group), what it produces."""

    name: str
    runs: str = field(compare=False)  # the process that uses it, e.g. ``worker expense-intake``
    reads: tuple[str, ...] = ()
    group: str | None = None
    writes: tuple[str, ...] = ()
    #: Topic-name prefixes it may read / create (operators, admin).
    read_prefixes: tuple[str, ...] = ()
    create_prefixes: tuple[str, ...] = ()

    def bindings(self) -> list[AclBinding]:
        """The ALLOW rules of this principal; anything else is denied by the authorizer."""
        topic, group, prefixed = ResourceType.TOPIC, ResourceType.GROUP, PatternType.PREFIXED
        rules = [AclBinding(self.name, topic, t, Operation.READ) for t in self.reads]
        if self.group is not None:
            rules.append(AclBinding(self.name, group, self.group, Operation.READ))
        rules += [AclBinding(self.name, topic, t, Operation.WRITE) for t in self.writes]
        rules += [AclBinding(self.name, topic, p, Operation.READ, prefixed) for p in self.read_prefixes]
        for prefix in self.create_prefixes:
            rules += [
                AclBinding(self.name, topic, prefix, op, prefixed)
                for op in (Operation.CREATE, Operation.DESCRIBE, Operation.DESCRIBE_CONFIGS)
            ]
        return sorted(set(rules))


def principals(contracts: Contracts, topics: Topics) -> list[Principal]:
    """Every principal of a Handrail deployment with these contracts, services first, then one per agent."""
    agents = sorted(contracts.agents)
    first = sorted({w.steps[0].agents[0] for w in contracts.workflows.values()})
    # The validator hands on every step after the first (each branch of a parallel one), any step its
    # evaluator sends back, outputs to evaluator agents and a plan's subtasks to workers: every agent but
    # those only ever first.
    later = sorted(
        {
            agent
            for w in contracts.workflows.values()
            for i, s in enumerate(w.steps)
            for agent in (*s.agents, *([s.evaluator.agent] if s.evaluator and s.evaluator.agent else []))
            if i or s.evaluator is not None
        }
        | {worker for w in contracts.workflows.values() for s in w.steps for worker in s.workers}
    )
    t = topics
    state = state_topics(t)
    fixed = [
        Principal(
            ROUTER, "router", reads=(t.tasks, *state), group=ROUTER,
            writes=(*_agent_topics(t, first), t.results, t.dlq, t.audit),
        ),
        Principal(
            VALIDATOR, "validator", reads=(t.steps, *state), group=VALIDATOR,
            writes=(*_agent_topics(t, later), t.reviews_requested, t.results, t.dlq, t.audit),
        ),
        Principal(
            CIRCUIT_BREAKER, "circuit-breaker", reads=(t.events, t.reviews_requested, *state), group=CIRCUIT_BREAKER,
            writes=(t.control, t.events, t.reviews_requested, t.audit, t.dlq),
        ),
        Principal(
            HUMAN_REVIEW, "human-review", reads=(t.reviews_requested, t.reviews_decided, t.dlq, *state),
            group=HUMAN_REVIEW,
            # dlq: the task console lists dead letters. reviews.requested too: a timed-out review is re-requested
            # for a higher role; control: the graduation rule's autonomy changes (config/autonomy.yaml, auto: true).
            writes=(
                t.reviews_requested, t.reviews_decided, *_agent_topics(t, agents), t.results, t.control, t.audit,
                t.dlq,
            ),
        ),
        Principal(SUBMITTER, "task producers (client, CLI submit)", reads=(t.results,), writes=(t.tasks,)),
        Principal(
            OPERATOR, "operators (CLI watch, trace, dlq list, halt, autonomy)", read_prefixes=(t.prefix,),
            # halts and autonomy changes (ControlRecords), a halted task's audit record, and the handoff
            # that resumes or forks a task from its checkpoint
            writes=(t.control, t.audit, *_agent_topics(t, agents)),
        ),
        Principal(
            REPLAYER, "operators replaying dead letters (CLI dlq replay)", reads=(t.dlq,),
            writes=(t.tasks, *_agent_topics(t, sorted({*first, *later})), t.steps, t.audit),
        ),
        Principal(ADMIN, "handrail topics ensure", create_prefixes=(t.prefix,)),
    ]  # fmt: skip
    workers = [
        Principal(
            agent_principal(a), f"worker {a}", reads=(t.agent(a),), group=agent_principal(a),
            writes=(t.steps, t.events, t.dlq),
        )
        for a in agents
    ]  # fmt: skip
    return fixed + workers


def state_topics(topics: Topics) -> tuple[str, ...]:
    """What every service reads from the start, outside any group: whichever first finds that Redis lost
    its state rebuilds it from these (``handrail.recovery``)."""
    return (topics.audit, topics.results, topics.control)


def bindings(principals_: Iterable[Principal]) -> list[AclBinding]:
    """Every ACL of ``principals_``, sorted by principal."""
    return [rule for p in principals_ for rule in p.bindings()]


def _agent_topics(topics: Topics, agents: Iterable[str]) -> list[str]:
    return [topics.agent(a) for a in agents]
