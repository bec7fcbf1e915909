"""``make chaos``: tasks at a steady rate through the public topics while faults are injected at random.

- ``cluster``: a Kafka, a Redis (no persistence), a model server and the services of its own
- ``faults``: the fault kinds and the schedule that injects them one after another
- ``workload``: the submitter and the reviewer who approves over the HTTP API
- ``verdict``: reading results, dead letters, the audit trail and the ledger back, and judging them
"""
