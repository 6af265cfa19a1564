"""Alembic environment for headwater's store.

At runtime ``Store.migrate()`` runs alembic programmatically and hands over its own
connection (already inside a transaction and, on PostgreSQL, holding the migration
advisory lock) through ``config.attributes["connection"]``. For development,
``alembic -x url=sqlite:///dev.db revision --autogenerate -m "..."`` (with
``script_location`` pointing here) connects by itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from headwater.store.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("pass the database with: alembic -x url=<sync SQLAlchemy URL> ...")
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()
