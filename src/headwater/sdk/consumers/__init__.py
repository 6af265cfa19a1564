"""Exactly-once outbox consumers: the supervisor, its worker processes, event handling."""
