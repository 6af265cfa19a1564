"""What a database failure looks like to the modules above the store.

A lost connection or a failed statement reaches the caller as SQLAlchemy's ``DBAPIError``;
loops that retry on infrastructure errors name it through ``DATABASE_ERRORS`` so they need
not import SQLAlchemy.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

__all__ = ["DATABASE_ERRORS"]

DATABASE_ERRORS: tuple[type[Exception], ...] = (DBAPIError,)
