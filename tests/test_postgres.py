"""The store conformance suite on PostgreSQL, and what only the PostgreSQL store promises."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
from postgres_server import Server

from router.core.chain import verify
from router.core.protocols import Store
from router.store.testing import *  # noqa: F403
from router.store.testing import sealed_run

pytestmark = pytest.mark.anyio
asyncpg = pytest.importorskip(
    "asyncpg", reason='the PostgreSQL store needs asyncpg: pip install "router[postgres]"'
)
_names = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.stop()


async def fresh_database(server: Server) -> str:
    name = f"router_test_{next(_names)}"
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return server.dsn(name)


@pytest.fixture
async def store(server: Server) -> AsyncIterator[Store]:
    from router.store.postgres import PostgresStore

    async with PostgresStore.open(await fresh_database(server)) as postgres:
        yield postgres


async def test_postgres_refuses_update_delete_and_a_forged_insert(server: Server) -> None:
    from router.store.postgres import PostgresStore

    dsn = await fresh_database(server)
    async with PostgresStore.open(dsn) as store:
        await store.append(sealed_run("r1", 3))
    conn = await asyncpg.connect(dsn)
    try:
        for sql in (
            "UPDATE router_events SET kind = 'forged' WHERE seq = 1",
            "DELETE FROM router_events WHERE seq = 2",
            "TRUNCATE router_events",
            "INSERT INTO router_events (run_id, seq, kind, payload, prev_hash, hash) "
            "SELECT run_id, 3, kind, payload, hash, hash FROM router_events WHERE seq = 1",
        ):
            with pytest.raises(asyncpg.PostgresError, match="router:"):
                await conn.execute(sql)
    finally:
        await conn.close()
    async with PostgresStore.open(dsn) as store:
        assert verify(await store.read("r1")) == 3
