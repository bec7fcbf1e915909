"""Kafka plumbing: a broker with safe producer settings, typed publishing, and the
consumer pipeline that verifies handoffs, dedupes redeliveries and dead-letters
what cannot be processed."""

from handrail.bus.broker import make_admin, make_broker, make_consumer, make_producer, make_reader
from handrail.bus.delivery import Delivery
from handrail.bus.pipeline import Pipeline
from handrail.bus.publisher import Publisher

__all__ = [
    "Delivery",
    "Pipeline",
    "Publisher",
    "make_admin",
    "make_broker",
    "make_consumer",
    "make_producer",
    "make_reader",
]
