"""Kafka is the record: noticing that Redis lost its state, and rebuilding it from the topics.

- ``facts``: the audit and control topics folded into what Redis must hold
- ``rebuild``: reading the topics and writing the state back, under a lock
- ``keeper``: each service's watch on the state generation (``handrail.state.generation``)
"""

from handrail.recovery.keeper import StateKeeper
from handrail.recovery.rebuild import Rebuilder, RebuildReport

__all__ = ["RebuildReport", "Rebuilder", "StateKeeper"]
