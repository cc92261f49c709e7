"""The orchestrator: consumes accepted messages, plans, runs code in a sandbox, writes answers."""
