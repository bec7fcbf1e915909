"""The audit trail: one hash-chained record per decision, per task, on ``<prefix>audit``.

Each record carries the hash of the task's previous record, so a changed,
removed or reordered record is detected (``handrail audit verify TASK``).
"""

from handrail.audit.chain import verify_chain
from handrail.audit.log import AuditLog
from handrail.audit.record import AuditRecord

__all__ = ["AuditLog", "AuditRecord", "verify_chain"]
