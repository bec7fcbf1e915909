"""Prompts outside the code: versioned files, the active version switchable at run time.

Files live in ``config/prompts/<name>/<version>.md``; an agent declares
``prompt: name@version``; ``handrail prompts activate|rollback`` moves the
active version (a pointer in Redis) and workers pick it up on their next step.
"""

from handrail.prompts.errors import (
    NothingToRollBack,
    PromptError,
    PromptNotFound,
    PromptRenderError,
    PromptTemplateError,
)
from handrail.prompts.library import PromptLibrary, parse_ref
from handrail.prompts.store import PromptStore, Switch
from handrail.prompts.template import VARIABLES, PromptTemplate, step_scope

__all__ = [
    "VARIABLES",
    "NothingToRollBack",
    "PromptError",
    "PromptLibrary",
    "PromptNotFound",
    "PromptRenderError",
    "PromptStore",
    "PromptTemplate",
    "PromptTemplateError",
    "Switch",
    "parse_ref",
    "step_scope",
]
