"""floors: what the machine itself costs, measured in the same run, so that router's
figures can be read against them: a precompiled msgspec decode of a tool call, one SQLite
WAL commit of a 300-byte row (synchronous NORMAL and FULL), the same commit through
aiosqlite, and the commit of one step's three events on router's own schema."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import msgspec

from router.core.chain import Chain
from router.core.events import ModelResponded, StoredEvent, ToolCall, ToolStarted, ToolSucceeded
from router.store.sqlite_schema import INSERT as _INSERT
from router.store.sqlite_schema import SCHEMA as _SCHEMA

from . import postgres
from .measure import Record, record, time_calls
from .peers import Samples
from .system import VERSION, open_store, postgres_kinds


class _Args(msgspec.Struct, forbid_unknown_fields=True):
    a: int
    b: int


def _connect(path: Path, synchronous: str, schema: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.executescript(schema)
    return conn


def _row_commit(conn: sqlite3.Connection) -> Callable[[], object]:
    payload = b"x" * 300

    def commit() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (?)", (payload,))
        conn.execute("COMMIT")

    return commit


def _steps() -> Callable[[], list[StoredEvent]]:
    """One step's three events at a time, sealed on one run's chain."""
    chain = Chain(f"run_{uuid.uuid4().hex[:16]}")
    call = ToolCall(id="call_1_0", name="add", arguments='{"a": 1, "b": 1}')

    def step() -> list[StoredEvent]:
        events = chain.seal(
            [
                ModelResponded(at=1, step=1, tool_calls=(call,), model="fake"),
                ToolStarted(
                    at=2, call_id="call_1_0", tool="add", arguments='{"a":1,"b":1}', idempotent=True
                ),
                ToolSucceeded(at=3, call_id="call_1_0", tool="add", result="2"),
            ]
        )
        chain.advance(events)
        return events

    return step


def _step_commit(conn: sqlite3.Connection) -> Callable[[], object]:
    step = _steps()

    def commit() -> None:
        events = step()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            _INSERT, [(e.run_id, e.seq, e.kind, e.payload, e.prev_hash, e.hash) for e in events]
        )
        conn.execute("COMMIT")

    return commit


async def run(quick: bool, peers: object, tmp: Path) -> list[Record]:
    n = 200 if quick else 1000
    decoder = msgspec.json.Decoder(_Args)
    records = [
        record(
            "floors",
            "msgspec",
            msgspec.__version__,
            "-",
            Samples(time_calls(lambda: decoder.decode(b'{"a": 1, "b": 2}'), n, 100)),
            "precompiled decode of one tool call's arguments",
            unit="us/call",
        )
    ]
    table = "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);"
    for synchronous, count in (("NORMAL", n), ("FULL", n // 5)):
        conn = _connect(tmp / f"floor-{synchronous}.db", synchronous, table)
        records.append(
            record(
                "floors",
                "sqlite3",
                sqlite3.sqlite_version,
                synchronous.lower(),
                Samples(time_calls(_row_commit(conn), count)),
                "one WAL commit of a 300-byte row",
                unit="us",
            )
        )
        conn.close()
    conn = _connect(tmp / "floor-step.db", "NORMAL", _SCHEMA)
    records.append(
        record(
            "floors",
            "sqlite3",
            sqlite3.sqlite_version,
            "normal",
            Samples(time_calls(_step_commit(conn), n)),
            "one step's 3 events committed on router's schema (triggers, index)",
            unit="us",
        )
    )
    conn.close()
    async with aiosqlite.connect(tmp / "floor-aiosqlite.db") as db:
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        await db.commit()
        times = []
        for _ in range(n // 2):
            begin = time.perf_counter_ns()
            await db.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 300,))
            await db.commit()
            times.append((time.perf_counter_ns() - begin) / 1000)
    records.append(
        record(
            "floors",
            "aiosqlite",
            aiosqlite.__version__,
            "normal",
            Samples(times),
            "insert + commit of a 300-byte row: two thread round trips",
            unit="us",
        )
    )
    if postgres_kinds():
        records += await _postgres_floors(n // 2, tmp)
    return records


async def _postgres_floors(n: int, tmp: Path) -> list[Record]:
    """On the bench's PostgreSQL server (fsync on): one autocommit INSERT of a 300-byte row
    (one round trip, one commit), and one step's 3 events through router's append."""
    import asyncpg

    server = postgres.shared()
    assert server is not None
    conn = await asyncpg.connect(server.new_database("floor"))
    try:
        server_version = conn.get_server_version()
        await conn.execute("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, v BYTEA)")
        times = []
        for _ in range(n):
            begin = time.perf_counter_ns()
            await conn.execute("INSERT INTO t (v) VALUES ($1)", b"x" * 300)
            times.append((time.perf_counter_ns() - begin) / 1000)
    finally:
        await conn.close()
    store = await open_store("postgres", tmp)
    step = _steps()
    appends = []
    for _ in range(n):
        events = step()
        begin = time.perf_counter_ns()
        await store.append(events)
        appends.append((time.perf_counter_ns() - begin) / 1000)
    await store.aclose()
    return [
        record(
            "floors",
            "asyncpg",
            asyncpg.__version__,
            f"postgres {server_version.major}",
            Samples(times),
            "one INSERT + COMMIT of a 300-byte row (autocommit): one round trip",
            unit="us",
        ),
        record(
            "floors",
            "router",
            VERSION,
            "postgres",
            Samples(appends),
            "one step's 3 events appended on router's schema (triggers, chain check)",
            unit="us",
        ),
    ]
