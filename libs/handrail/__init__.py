"""Handrail: a production runtime for AI agents as event-driven microservices on Kafka.

The shared library every service stands on: the public message contract
(`handrail.messages`), context hashing (`handrail.hashing`), the agent and
workflow contracts (`handrail.contracts`), tools, model providers, Redis state,
and the Kafka plumbing that verifies every handoff (`handrail.bus`).
"""

__version__ = "0.1.0"
