"""Progressive autonomy, measured: each (agent, workflow)'s effective level, its track record, the rule.

- ``records``: ``AutonomyChanged``, the change recorded on the compacted control topic
- ``levels``: ``AutonomyLevels``, the effective level (config, or an override) from Redis, cached
- ``measure``: how reviews ended, counted from the review topics
- ``rule``: what the graduation rule (``config/autonomy.yaml``) recommends

Errors::

    AutonomyError              root of what this package raises on purpose
    ├── UnknownTarget          the agent or workflow is not in the contracts, or the agent runs no step of it
    ├── Unchanged              the change asked for would change nothing
    ├── Superseded             the level is no longer the one the change was decided on (another change won)
    └── ChangeInProgress       another change of the same (agent, workflow) is being made (retryable)
"""

from handrail.autonomy.errors import AutonomyError, ChangeInProgress, Superseded, Unchanged, UnknownTarget
from handrail.autonomy.levels import AutonomyLevels, Effective, Recorder
from handrail.autonomy.measure import Counts, Outcome, Tally, outcome_of
from handrail.autonomy.records import AutonomyChanged
from handrail.autonomy.rule import Assessment, Recommendation, assess, recommend

__all__ = [
    "Assessment",
    "AutonomyChanged",
    "AutonomyError",
    "AutonomyLevels",
    "ChangeInProgress",
    "Counts",
    "Effective",
    "Outcome",
    "Recommendation",
    "Recorder",
    "Superseded",
    "Tally",
    "Unchanged",
    "UnknownTarget",
    "assess",
    "outcome_of",
    "recommend",
]
