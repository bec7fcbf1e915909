"""What can go wrong with a prompt, and when it is found out.

Activation checks the version exists and its template parses and names only
known variables, so a bad prompt is refused by ``handrail prompts activate``,
not discovered by a worker at 3 a.m.

    HandrailError
    ├── ContractError
    │   └── PromptError              a prompt cannot be loaded, activated or rolled back (at start-up: stop)
    │       ├── PromptNotFound       no such prompt, or no file for that version
    │       ├── PromptTemplateError  the template does not parse, or names a variable that does not exist
    │       └── NothingToRollBack    the prompt has no earlier active version
    └── Rejected
        └── PromptRenderError        the template needs a value this task's context lacks -> the step fails
"""

from __future__ import annotations

from handrail.errors import ContractError, Rejected


class PromptError(ContractError):
    """A prompt cannot be loaded, activated or rolled back; the message names the prompt and the file.

    A contract error: a worker whose agent declares a prompt that does not load stops at start-up.
    """


class PromptNotFound(PromptError):
    """No such prompt name, or no file for the requested version."""


class PromptTemplateError(PromptError):
    """The template does not parse, or names a variable outside the step's scope."""


class NothingToRollBack(PromptError):
    """Rollback asked for, but the prompt was never switched from its declared version."""


class PromptRenderError(Rejected):
    """A valid template refers to a value this task's context does not have."""

    error_type = "prompt_render_failed"
