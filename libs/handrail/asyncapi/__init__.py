"""The AsyncAPI 3 document of Handrail's topics: which topic carries what, keyed how, sent and received by whom.

``python -m handrail.asyncapi`` writes ``schemas/asyncapi.json`` from ``config/``
and the default prefix; ``--check`` exits 1 when the checked-in one differs.
The human-review service serves its own deployment's at ``/api/asyncapi.json``.

- ``carried``: what each topic carries and how its messages are keyed
- ``messages``: a payload as an AsyncAPI message (schema, key, headers)
- ``document``: the whole document, from the topics, the models and the ACL principals
"""

from __future__ import annotations

import json
from pathlib import Path

from handrail.asyncapi.document import document
from handrail.contracts import Contracts
from handrail.topics import Topics

#: Where the document lives, relative to the repository root: beside the payloads' JSON Schemas.
DOCUMENT_PATH = Path("schemas/asyncapi.json")

__all__ = ["DOCUMENT_PATH", "document", "render", "stale"]


def render(contracts: Contracts, topics: Topics | None = None) -> str:
    """The document as the file's text."""
    return json.dumps(document(contracts, topics or Topics()), indent=2) + "\n"


def stale(contracts: Contracts, path: Path = DOCUMENT_PATH) -> bool:
    """Whether the file at ``path`` is missing or differs from what ``contracts`` and the models produce."""
    return not path.exists() or path.read_text() != render(contracts)
