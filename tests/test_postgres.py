"""The store conformance suite on PostgreSQL, and what only the PostgreSQL store promises."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from postgres_server import Server, start

from router.core.chain import verify
from router.core.protocols import Store
from router.store.testing import *  # noqa: F403
from router.store.testing import sealed_run

pytestmark = pytest.mark.anyio
asyncpg = pytest.importorskip(
    "asyncpg", reason='the PostgreSQL store needs asyncpg: pip install "router[postgres]"'
)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = start()
    yield running
    running.stop()


@pytest.fixture
async def store(server: Server) -> AsyncIterator[Store]:
    from router.store.postgres import PostgresStore

    async with PostgresStore.open(server.new_database("router_test")) as postgres:
        yield postgres


async def test_postgres_refuses_update_delete_and_a_forged_insert(server: Server) -> None:
    from router.store.postgres import PostgresStore

    dsn = server.new_database("router_test")
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


async def test_a_decision_wakes_the_workers_at_once(store: Store) -> None:
    import anyio

    from router import (
        Engine,
        Principal,
        ReviewRules,
        Runtime,
        ScriptedModel,
        Tools,
        Worker,
        review_run,
        tool,
    )
    from router.models.scripted import call, say

    @tool(inline=True, idempotent=True)
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    rules = ReviewRules(before_tools=frozenset({"add"}))

    def agent(turns: list) -> Engine:  # type: ignore[type-arg]
        return Engine(store, ScriptedModel(turns), Tools([add]), agent="adder", review=rules)

    turns = [call("add", '{"a": 1, "b": 2}'), say("3")]
    waiting = await agent(turns).start("add", principal=Principal(id="u"), run_id="r")
    assert waiting.phase == "awaiting_review"
    worker = Worker(Runtime(store, owner="w"), [agent(turns[1:])], poll_s=3600)
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: worker.serve(ready=ready.set))
        await ready.wait()  # it has looked once, found nothing, and polls again in an hour
        await review_run(store, "r", "approve", by="ann")
        with anyio.fail_after(60):  # woken by the notification, not its poll
            while worker.resumed < 1:
                await anyio.sleep(0.01)
        worker.stop()
    assert [s.status for s in await store.runs()] == ["ended"]


async def test_the_documented_grants_are_enough_for_an_application_role(server: Server) -> None:
    from router.core.protocols import Fence
    from router.store.postgres import PostgresStore

    dsn = server.new_database("router_test")
    async with PostgresStore.open(dsn):  # the owner creates the schema
        pass
    role = "app_of_" + dsn.rsplit("/", 1)[1]  # roles are the server's, not a database's
    owner = await asyncpg.connect(dsn)
    try:
        await owner.execute(f"CREATE ROLE {role} LOGIN")
        await owner.execute(f"GRANT INSERT, SELECT ON router_events TO {role}")
        await owner.execute(f"GRANT USAGE ON SEQUENCE router_events_id_seq TO {role}")
        await owner.execute(f"GRANT SELECT, INSERT, UPDATE ON router_leases TO {role}")
    finally:
        await owner.close()
    app_dsn = dsn.replace("postgresql://postgres@", f"postgresql://{role}@")
    store = PostgresStore(await asyncpg.create_pool(app_dsn, min_size=1, max_size=2))
    try:
        events = sealed_run("r", 3)
        token = await store.append(events[:1], fence=Fence("app", 0, 60))
        await store.append(events[1:2], fence=Fence("app", token))
        assert await store.renew_leases([await store.acquire_lease("r", "app", 60)], 60) == []
        await store.release_lease("r", "app")
        await store.append(events[2:], fence=Fence("app", 0, 0, True, "active"))
        assert [lease.run_id for lease in await store.claim("w", 60, 5)] == ["r"]
        await store.break_lease("r")
        assert verify(await store.read("r")) == 3
        conn = await asyncpg.connect(app_dsn)
        try:
            with pytest.raises(asyncpg.PostgresError):  # no grant, and the triggers refuse
                await conn.execute("UPDATE router_events SET kind = 'x'")
        finally:
            await conn.close()
    finally:
        await store.aclose()


async def test_leases_cannot_be_deleted_or_wound_back(server: Server) -> None:
    from router.core.protocols import Fence
    from router.store.postgres import PostgresStore

    dsn = server.new_database("router_test")
    async with PostgresStore.open(dsn) as store:
        await store.append(sealed_run("r1", 2), fence=Fence("me", 0, 60.0))
    conn = await asyncpg.connect(dsn)
    try:
        for sql in (
            "DELETE FROM router_leases",
            "TRUNCATE router_leases",
            "UPDATE router_leases SET token = 0",
        ):
            with pytest.raises(asyncpg.PostgresError, match="router: a lease"):
                await conn.execute(sql)
        await conn.execute("UPDATE router_leases SET owner = '', token = token + 1")  # allowed
    finally:
        await conn.close()


async def test_a_read_only_store_reads_and_refuses_writes_and_creates_nothing(
    server: Server,
) -> None:
    from router import NotALog, StoreError
    from router.store.postgres import PostgresStore

    empty = server.new_database("router_test")
    for options in ({"read_only": True}, {"create": False}):
        with pytest.raises(NotALog, match="router_events"):
            await PostgresStore.open(empty, **options)  # type: ignore[arg-type]
    conn = await asyncpg.connect(empty)
    try:  # nothing was created in a database that holds no log
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'router%'")
            == 0
        )
    finally:
        await conn.close()
    dsn = server.new_database("router_test")
    async with PostgresStore.open(dsn) as store:
        await store.append(sealed_run("r1", 3))
    async with PostgresStore.open(dsn, read_only=True) as reader:
        assert verify(await reader.read("r1")) == 3
        with pytest.raises(StoreError, match="read-only"):
            await reader.append(sealed_run("r2", 1))
