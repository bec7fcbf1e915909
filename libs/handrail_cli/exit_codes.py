"""What ``handrail`` exits with: every code the CLI uses, here and nowhere else.

``handrail --help`` lists them (:func:`epilog`), and so does the README.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """A ``handrail`` command's exit status, and what it tells a script; each member's docstring says when."""

    def __new__(cls, code: int, doc: str) -> ExitCode:
        member = int.__new__(cls, code)
        member._value_ = code
        member.__doc__ = doc
        return member

    OK = 0, "done (and a task waited on completed)"
    FAILED = 1, "failed: a service unreachable or refusing, a broken audit chain, stale files, a key that exists"
    USAGE = 2, "nothing was done: bad arguments, an unknown or ambiguous id, configuration that does not load"
    NOT_COMPLETED = 3, "the task ended, but not completed: rejected, halted or failed (its result says why)"
    NOT_FOUND = 4, "nothing to show yet: no result before the idle timeout, no audit records for the task"
    INTERRUPTED = 130, "interrupted (Ctrl-C)"


def epilog() -> str:
    """The exit codes, one per line, for the end of ``handrail --help``."""
    return "Exit codes:\n" + "\n".join(f"{code.value:>3}  {code.__doc__}" for code in ExitCode)
