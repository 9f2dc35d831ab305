"""The SQLite store's file: opening it for writing or read-only, telling a router log from
any other database, noticing that the file was deleted or replaced under an open store,
and turning SQLite's errors into coded ones.

What SQLite can detect, and what it cannot (the README says the same to operators):

- A damaged page of the database file is reported when it is read ("database disk image
  is malformed"): ``StoreCorrupt``. A damaged byte inside a stored event is not a damaged
  page: the hash chain catches it (``router verify``).
- The WAL is checksummed frame by frame, and on opening SQLite silently drops every frame
  from the first bad one on: the commits since the last checkpoint can vanish without any
  error. Only heads kept outside the file (``router heads``, ``router verify --anchors``)
  show that. The store checkpoints often enough to bound that window (``SqliteStore``).
- A consistent rewrite (events changed and re-hashed, the triggers dropped) passes the
  chain; anchors show it too.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

import aiosqlite

from ..errors import NotALog, StoreCorrupt, StoreError, StoreLost
from .sqlite_schema import SCHEMA_VERSION

__all__ = [
    "ROUTER_TABLES",
    "FileIdentity",
    "check_log",
    "connect_reader",
    "file_identity",
    "is_busy",
    "read_layout",
    "store_error",
]

ROUTER_TABLES = frozenset({"events", "runs", "leases"})
BUSY_TIMEOUT_MS = 5000  # how long a write waits for another process's lock (off the loop)

FileIdentity = tuple[int, int, int, int]  # (device, inode) of the database and of its WAL

_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table'"


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether another connection holds the lock this one asked for."""
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def store_error(path: str, doing: str, exc: sqlite3.Error) -> StoreError:
    """A coded error for what SQLite raised: ``StoreCorrupt`` for a damaged file."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_NOTADB:
        error: StoreError = NotALog(path, "it is not a SQLite database (or its header is damaged)")
    elif code == sqlite3.SQLITE_CORRUPT:
        error = StoreCorrupt(path, str(exc))
    else:
        error = StoreError(f"{path}: {doing} failed: {exc}")
    error.__cause__ = exc
    return error


def file_identity(path: str) -> FileIdentity:
    """The device and inode of the database file and its WAL; raises StoreLost if either
    is gone. Another file at the same path (a restore, a copy moved over it) has another
    inode: the store would otherwise write to a file nobody will ever open again."""
    try:
        db, wal = os.stat(path), os.stat(path + "-wal")
    except FileNotFoundError as exc:
        raise StoreLost(path, f"the file {exc.filename} was deleted") from exc
    return db.st_dev, db.st_ino, wal.st_dev, wal.st_ino


def check_log(where: str, tables: set[str], version: int, *, empty_ok: bool) -> None:
    """Raise NotALog unless a database with these tables and user_version is a router log
    (or, with ``empty_ok``, an empty database that may become one)."""
    if not tables and version == 0:
        if empty_ok:
            return
        raise NotALog(where, "it is empty")
    missing = ROUTER_TABLES - tables
    if missing and empty_ok and all(t.startswith("router_") for t in tables):
        return  # only router's own other tables (its memory): the log may join them
    if missing:
        raise NotALog(
            where,
            f"it has no {', '.join(sorted(missing))} table(s) (tables: "
            f"{', '.join(sorted(tables)) or 'none'}); router leaves it as it is",
        )
    if version not in (2, SCHEMA_VERSION):
        raise StoreError(
            f"{where}: log schema version {version}; this router reads version "
            f"{SCHEMA_VERSION} (version 1 was a development layout with no migration: "
            "export it with the router that wrote it)"
        )


def read_layout(conn: sqlite3.Connection) -> tuple[set[str], int]:
    """The database's table names and user_version."""
    tables = {row[0] for row in conn.execute(_TABLES)}
    return tables, conn.execute("PRAGMA user_version").fetchone()[0]


async def connect_reader(path: str, *, read_only: bool) -> aiosqlite.Connection:
    """A reading connection (aiosqlite: off the event loop). Read-only opens the file with
    ``mode=ro``: it never writes, never waits for a writer (WAL readers do not), and works on
    a file the process may not write; it must be a router log of the current version.

    A copy of a log in a folder the process cannot write, with no WAL beside it, is opened
    as immutable: SQLite cannot make the shared-memory file a WAL reader needs there, and
    with no WAL nobody is writing to it. With a WAL beside it that cannot be read, the
    error says to copy the log whole (or check it where it lives)."""
    if not read_only:
        reader = await aiosqlite.connect(path)
        await reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return reader
    if not Path(path).is_file():
        raise StoreError(f"{path}: no such file")
    try:
        return await _open_read_only(path, "mode=ro")
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code not in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
            raise store_error(path, "opening the log read-only", exc) from exc
        if Path(path + "-wal").exists():
            raise StoreError(
                f"{path}: its WAL cannot be read from here (no shared-memory file, and the "
                "folder is read-only): copy the log after a checkpoint (router backup), or "
                "read it where it lives"
            ) from exc
    try:
        return await _open_read_only(path, "mode=ro&immutable=1")
    except sqlite3.Error as exc:
        raise store_error(path, "opening the log read-only", exc) from exc


async def _open_read_only(path: str, options: str) -> aiosqlite.Connection:
    """A read-only connection to a router log (checked). Raises sqlite3.Error, NotALog."""
    reader = await aiosqlite.connect(f"file:{quote(path)}?{options}", uri=True)
    try:
        await reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        tables = {row[0] for row in await reader.execute_fetchall(_TABLES)}
        version = next(iter(await reader.execute_fetchall("PRAGMA user_version")))[0]
        check_log(path, tables, version, empty_ok=False)
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{path}: log schema version {version}: open it once for writing (any "
                "router command that appends, or SqliteStore.open) to bring it to version "
                f"{SCHEMA_VERSION}"
            )
    except BaseException:
        await reader.close()
        raise
    return reader
