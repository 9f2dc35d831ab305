"""The conformance suite on every store, and what only the SQLite store promises."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from router import Durability, LeaseHeld, MemoryStore, NotALog, SqliteStore, StoreError
from router.core.chain import verify
from router.core.protocols import Fence, Store
from router.store.testing import *  # noqa: F403
from router.store.testing import sealed_run

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=["memory", "sqlite-commit", "sqlite-group", "sqlite-fsync", "sqlite-group_fsync"]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        memory = MemoryStore()
        yield memory
        await memory.aclose()
        return
    durability = request.param.split("-")[1]
    async with SqliteStore.open(tmp_path / "log.db", durability) as sqlite_store:
        yield sqlite_store


async def test_sqlite_refuses_update_and_delete_from_any_connection(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SqliteStore.open(path) as store:
        await store.append(sealed_run("r1", 3))
    conn = sqlite3.connect(path)
    for sql in (
        "UPDATE events SET kind = 'forged' WHERE seq = 1",
        "DELETE FROM events WHERE seq = 2",
        "DELETE FROM events",
        "INSERT OR REPLACE INTO events (run_id, seq, kind, payload, prev_hash, hash) "
        "SELECT run_id, seq, 'forged', payload, prev_hash, hash FROM events WHERE seq = 1",
        "DELETE FROM runs",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="router:"):
            conn.execute(sql)
    conn.close()
    async with SqliteStore.open(path) as store:
        assert verify(await store.read("r1")) == 3


async def test_sqlite_uses_wal_and_the_durability_setting(tmp_path: Path) -> None:
    for durability, level in (("commit", 1), ("group", 1), ("fsync", 2), ("group_fsync", 2)):
        async with SqliteStore.open(tmp_path / f"{durability}.db", durability) as store:
            conn = store._conn()
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == level


@pytest.mark.parametrize("durability", list(Durability))
async def test_checkpoints_fold_the_wal_back_without_a_commit_doing_it(
    tmp_path: Path, durability: Durability
) -> None:
    pages = 200  # a checkpoint every 200 pages of WAL
    path = tmp_path / "log.db"
    wal = tmp_path / "log.db-wal"
    async with SqliteStore.open(path, durability, checkpoint_pages=pages) as store:
        assert (
            store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        )  # none inside a commit
        events = sealed_run("r1", 3 * pages)
        for event in events[:pages]:  # one commit each: enough WAL for a checkpoint
            await store.append([event])
        assert store.checkpoints >= 1 and store.checkpoint_error is None
        # The database file, read without its WAL, now holds the events.
        folded = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            assert folded.execute("SELECT COUNT(*) FROM events").fetchone()[0] > 0
        finally:
            folded.close()
        size = wal.stat().st_size
        for event in events[pages:]:
            await store.append([event])
        assert store.checkpoints >= 3
        # Writes pause while a checkpoint runs, so the WAL starts over after each one
        # instead of growing with the log.
        assert wal.stat().st_size <= 2 * size
        assert verify(await store.read("r1")) == 3 * pages


@pytest.mark.parametrize("durability", [Durability.GROUP, Durability.GROUP_FSYNC])
async def test_group_commit_shares_transactions_across_runs(
    tmp_path: Path, durability: Durability
) -> None:
    async with SqliteStore.open(tmp_path / "log.db", durability) as store:
        runs = [sealed_run(f"r{i}", 4) for i in range(50)]

        async def write(events: list) -> None:  # type: ignore[type-arg]
            for e in events:
                await store.append([e])

        async with anyio.create_task_group() as tg:
            for events in runs:
                tg.start_soon(write, events)
        assert store.appends == 200
        assert store.commits < store.appends  # batches from different runs shared commits
        for events in runs:
            assert await store.read(events[0].run_id) == events


@pytest.mark.parametrize("durability", [Durability.GROUP, Durability.GROUP_FSYNC])
async def test_leases_join_the_group_commit_and_still_exclude_other_owners(
    tmp_path: Path, durability: Durability
) -> None:
    async with SqliteStore.open(tmp_path / "log.db", durability) as store:
        runs = [sealed_run(f"r{i}", 2) for i in range(50)]

        async def advance(events: list) -> None:  # type: ignore[type-arg]
            run_id = events[0].run_id
            lease = await store.acquire_lease(run_id, "me", 30)
            for e in events:
                await store.append([e], fence=Fence("me", lease.token))
            await store.release_lease(run_id, "me", lease.token)

        async with anyio.create_task_group() as tg:
            for events in runs:
                tg.start_soon(advance, events)
        assert store.commits < 50  # 200 lease changes and appends, in a few shared transactions
        await store.acquire_lease("r0", "me", 30)
        with pytest.raises(LeaseHeld):
            await store.acquire_lease("r0", "someone else", 30)
        await store.release_lease("r0", "me")
        await store.acquire_lease("r0", "someone else", 30)


@pytest.mark.parametrize("durability", [Durability.GROUP, Durability.GROUP_FSYNC])
async def test_group_commit_reports_a_conflict_to_its_batch_only(
    tmp_path: Path, durability: Durability
) -> None:
    async with SqliteStore.open(tmp_path / "log.db", durability) as store:
        good, bad = sealed_run("good", 2), sealed_run("bad", 2)
        await store.append(bad[:1])
        outcomes: dict[str, str] = {}

        async def write(name: str, events: list) -> None:  # type: ignore[type-arg]
            try:
                await store.append(events)
                outcomes[name] = "ok"
            except StoreError as exc:
                outcomes[name] = exc.code

        async with anyio.create_task_group() as tg:
            tg.start_soon(write, "good", good)
            tg.start_soon(write, "bad", bad[:1])  # seq 0 again
        assert outcomes == {"good": "ok", "bad": "seq_conflict"}
        assert await store.read("good") == good


async def test_many_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SqliteStore.open(path) as one, SqliteStore.open(path, "fsync") as two:
        await one.append(sealed_run("a", 2))
        await two.append(sealed_run("b", 2))
        assert {r.run_id for r in await one.runs()} == {"a", "b"}
        await one.acquire_lease("a", "one", 60)
        with pytest.raises(StoreError, match="advanced by 'one'"):
            await two.acquire_lease("a", "two", 60)


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(NotALog, match="not a SQLite database") as caught:
        await SqliteStore.open(path)
    assert caught.value.code == "not_a_log"


async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "log.db")
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.append(sealed_run("r", 1))
    with pytest.raises(StoreError, match="closed"):
        await store.read("r")
