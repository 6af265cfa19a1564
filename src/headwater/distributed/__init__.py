"""Distributed mode: servers and workers over HTTP on one PostgreSQL (see the README)."""
