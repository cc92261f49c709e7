"""Athenic backend: the api, the orchestrator and the contracts they share."""
