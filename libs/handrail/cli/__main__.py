"""``python -m handrail.cli``: the same as the ``handrail`` command."""

from handrail.cli.main import main

main()
