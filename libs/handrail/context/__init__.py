"""What an agent's model is shown: the step's view of the task context, and the prompt assembled from
sections within their token caps (compacting the conversation when it is over them).

- ``views``: a step's ``context_view`` applied to the task context, and the hash of what it shows;
- ``assembly``: the prompt's sections, their caps, and the policies that keep them within (``ContextWindow``);
(the note a compacted prompt carries and the summarising call are ``handrail.llm.compaction``).
"""

from handrail.context.assembly import ContextOverCap, ContextWindow, Prompt, message_hash
from handrail.context.views import View, view_for

__all__ = ["ContextOverCap", "ContextWindow", "Prompt", "View", "message_hash", "view_for"]
