"""Fast state in Redis: task records, the committed hash chain, and redelivery dedupe.

Kafka is the source of truth; Redis holds what must be checked atomically
between replicas. Every failure to reach Redis is ``StateUnavailable``: the
platform fails closed and the message is retried later.
"""

from handrail.state.client import connect_redis
from handrail.state.tasks import Acceptance, Opening, TaskStore

__all__ = ["Acceptance", "Opening", "TaskStore", "connect_redis"]
