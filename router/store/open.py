"""Opening a store by where it is: a SQLite file's path, or a PostgreSQL URL."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from .sqlite import SqliteStore

__all__ = ["is_postgres", "open_store"]


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def open_store(location: str, **options: Any) -> AbstractAsyncContextManager[Any]:
    """``async with open_store(location) as store``: a PostgresStore for a
    ``postgresql://`` URL (the postgres extra), else a SqliteStore on that file.
    ``options`` go to the store's ``open``."""
    if is_postgres(location):
        from .postgres import PostgresStore

        return PostgresStore.open(location, **options)
    return SqliteStore.open(location, **options)
