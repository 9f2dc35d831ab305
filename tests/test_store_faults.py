"""The SQLite store under faults: a file deleted or replaced under it, another process's
lock, a file that is not a log, a read-only open, and the bound on what lives only in
the WAL."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from router import ConfigError, Durability, NotALog, SqliteStore, StoreError, StoreLost
from router.core.chain import verify
from router.store.testing import sealed_run

pytestmark = pytest.mark.anyio

DURABILITIES = [d.value for d in Durability]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("durability", DURABILITIES)
async def test_an_append_after_the_file_was_deleted_fails_and_keeps_failing(
    tmp_path: Path, durability: str
) -> None:
    path = tmp_path / "log.db"
    events = sealed_run("r1", 4)
    async with SqliteStore.open(path, durability) as store:
        await store.append(events[:2])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        for _ in range(2):  # not once: every later append is refused too
            with pytest.raises(StoreLost, match="deleted") as caught:
                await store.append(events[2:])
            assert caught.value.code == "store_lost"


@pytest.mark.parametrize("durability", DURABILITIES)
async def test_an_append_after_the_file_was_replaced_fails(tmp_path: Path, durability: str) -> None:
    path, elsewhere = tmp_path / "log.db", tmp_path / "other.db"
    events = sealed_run("r1", 4)
    async with SqliteStore.open(elsewhere) as other:
        await other.append(events[:2])
    async with SqliteStore.open(path, durability) as store:
        await store.append(events[:2])
        shutil.copyfile(elsewhere, tmp_path / "restored.db")
        (tmp_path / "restored.db").replace(path)  # a restore moved over the live file
        with pytest.raises(StoreLost, match="replaced"):
            await store.append(events[2:])


async def test_a_lock_held_by_another_process_never_blocks_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    events = sealed_run("r1", 3)
    async with SqliteStore.open(path, "commit") as store:
        await store.append(events[:1])
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's write lock
        loop_ran = anyio.Event()
        appended = anyio.Event()

        async def append() -> None:
            await store.append(events[1:])
            appended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(append)
            # The append is waiting for the lock on a worker thread, not on the loop: this
            # task gets to run, and ends the other transaction.
            await anyio.wait_all_tasks_blocked()
            assert not appended.is_set()
            loop_ran.set()
            other.execute("COMMIT")
        other.close()
        assert appended.is_set() and loop_ran.is_set()
        assert verify(await store.read("r1")) == 3
        await store.append(sealed_run("r2", 1))  # and inline commits go on afterwards


async def test_an_inline_commit_that_outwaits_the_lock_fails_with_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import router.store.sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 1)
    path = tmp_path / "log.db"
    async with SqliteStore.open(path, "commit") as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked"):
            await store.append(sealed_run("r1", 1))
        other.execute("ROLLBACK")
        other.close()
        await store.append(sealed_run("r1", 1))  # nothing was half-written
        assert verify(await store.read("r1")) == 1


async def test_a_checkpoint_is_due_by_age_as_well_as_by_size(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db", checkpoint_s=1e-9) as store:
        for event in sealed_run("r1", 5):
            await store.append([event])
        assert store.checkpoints == 5  # each commit was older than the bound by its end


async def test_the_default_bound_on_the_wal_is_a_few_megabytes(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        assert store.checkpoint_pages * 4096 <= 4 * 2**20 + 4096
        assert store.checkpoint_s <= 60


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
async def test_a_checkpoint_bound_that_is_not_positive_is_refused(
    tmp_path: Path, bad: float
) -> None:
    with pytest.raises(ConfigError, match="checkpoint_s"):
        SqliteStore(tmp_path / "log.db", checkpoint_s=bad)


async def test_another_applications_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    before = digest(path)
    for options in ({"read_only": True}, {"create": False}):
        with pytest.raises(NotALog, match="no events, leases, runs table") as caught:
            await SqliteStore.open(path, **options)  # type: ignore[arg-type]
        assert "customers" in str(caught.value)
    assert digest(path) == before
    assert not Path(f"{path}-wal").exists()  # not switched to WAL either


async def test_create_false_and_read_only_refuse_a_missing_file(tmp_path: Path) -> None:
    for options in ({"read_only": True}, {"create": False}):
        with pytest.raises(StoreError, match="no such file"):
            await SqliteStore.open(tmp_path / "nope.db", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "nope.db").exists()


async def test_a_read_only_store_reads_and_refuses_writes_without_touching_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.db"
    async with SqliteStore.open(path) as store:
        await store.append(sealed_run("r1", 3))
    before = digest(path)  # closed: the WAL is folded in and gone
    async with SqliteStore.open(path, read_only=True) as store:
        assert verify(await store.read("r1")) == 3
        assert [r.run_id for r in await store.runs()] == ["r1"]
        with pytest.raises(StoreError, match="read-only"):
            await store.append(sealed_run("r2", 1))
        with pytest.raises(StoreError, match="read-only"):
            await store.acquire_lease("r1", "me", 30)
    assert digest(path) == before


async def test_a_read_only_store_reads_while_another_writer_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SqliteStore.open(path) as writer:
        await writer.append(sealed_run("r1", 2))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO leases (run_id, owner, expires_at) VALUES ('x', 'y', 0)")
        async with SqliteStore.open(path, read_only=True) as reader:
            assert verify(await reader.read("r1")) == 2  # no wait for the writer
        other.execute("ROLLBACK")
        other.close()


async def test_a_corrupt_page_is_a_coded_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SqliteStore.open(path) as store:
        for i in range(40):
            await store.append(sealed_run(f"run-{i}", 5))
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data), page):  # every page but the schema's
        data[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as caught:
        async with SqliteStore.open(path, read_only=True) as store:
            for summary in await store.runs():
                await store.read(summary.run_id)
    assert caught.value.code in ("store_corrupt", "not_a_log", "store_error")
    await anyio.lowlevel.checkpoint()
