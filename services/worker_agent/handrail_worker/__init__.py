"""The worker-agent: runs one bounded step of one agent per handoff it receives."""
