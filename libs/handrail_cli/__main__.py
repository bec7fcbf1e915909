"""``python -m handrail_cli``: the same as the ``handrail`` command."""

from handrail_cli.main import main

main()
