"""Contracts shared by every service: message shapes, NATS names, settings, logging.

Nothing here imports a service.
"""
