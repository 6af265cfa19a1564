"""The backends the store contract tests run on, and the one way to leave memory out.

The ``store`` fixture (tests/conftest.py) runs every test that takes it on SQLite,
PostgreSQL and ``headwater.testing.InMemoryStore``. A test that needs SQL itself (the
migrated schema, an SQL transaction of its own) says so with ``@sql_only("why")``: the
reason is in the source next to the test, and the memory run is not collected rather than
skipped, so nothing is skipped silently (HEADWATER_REQUIRE_SERVICES=1 stays strict).
"""

from __future__ import annotations

import pytest

STORE_BACKENDS = ["sqlite", "postgres", "memory"]
SQL_BACKENDS = ["sqlite", "postgres"]


def sql_only(reason: str) -> pytest.MarkDecorator:
    """Run a ``store`` test on SQLite and PostgreSQL only; ``reason``: why not in memory."""
    if not reason.strip():
        raise ValueError("say why the in-memory store cannot run this test")
    return pytest.mark.parametrize("store_backend", SQL_BACKENDS, indirect=True)
