"""The embedded store: one SQLite file in WAL mode, shared by many runs.

The database itself refuses UPDATE and DELETE on the event log, and refuses an INSERT
whose seq or prev_hash does not continue the run's chain, whoever the writer is.

Durability is a named setting; each says what a crash can lose. In every setting a run
waits until its batch is committed before the engine goes on (before the next model call,
before a side-effecting tool), so nothing a run acted on is ever lost to a process crash.

- ``commit`` (default): each batch is its own transaction (WAL, synchronous=NORMAL). A
  process crash, kill -9 included, loses nothing committed; an OS crash or power loss may
  lose the commits since the last WAL checkpoint. No fsync, so the commit runs inline on
  the event loop: no thread hop.
- ``group``: as ``commit``, but the batches that concurrent runs append in the same turn
  of the event loop share one transaction. Same promise; one commit serves many runs.
- ``fsync``: each batch is committed with synchronous=FULL on a worker thread: survives
  power loss; costs an fsync and a thread round trip per batch.
- ``group_fsync``: as ``fsync``, but batches that arrive while a commit is in flight share
  the next transaction and its fsync. Same promise as ``fsync``.

Reads go through aiosqlite, off the event loop. Checkpoints, which fold the WAL back into
the database file and fsync it, run on a worker thread too: the event loop never waits for
one. The store's writes pause meanwhile (so the WAL restarts from its beginning once a
checkpoint is done); a crash during a checkpoint loses nothing. A checkpoint is due once
the WAL has grown by ``checkpoint_pages`` pages or ``checkpoint_s`` seconds have passed
since the last one with commits in between: that bounds the history that lives only in
the WAL, where SQLite drops every frame after a damaged one without an error.

An inline commit never waits for a lock on the event loop: when another process holds the
database's write lock, the commit is handed to a worker thread that waits there (up to
5 s), and the store's other writes wait for it. Before each commit the store checks that
its file is still the one it opened (not deleted, not replaced): otherwise the append
fails with StoreLost instead of "committing" into a file nobody will open again.

``read_only=True`` opens the file with ``mode=ro`` (no writer connection, nothing
created, the file must be a router log); ``create=False`` opens an existing log for
writing and refuses any other file.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar, final

import aiosqlite
import anyio
import anyio.lowlevel
import anyio.to_thread
from msgspec.structs import astuple

from ..core.events import StoredEvent
from ..core.protocols import Fence, Lease, RunSummary
from ..errors import ConfigError, LeaseHeld, SeqConflict, StoreError, StoreLost
from . import batch_run
from . import sqlite_leases as leases
from .sqlite_file import (
    BUSY_TIMEOUT_MS,
    FileIdentity,
    check_log,
    connect_reader,
    file_identity,
    is_busy,
    read_layout,
    store_error,
)
from .sqlite_schema import FROM_2, INSERT, SCHEMA

__all__ = ["Durability", "SqliteStore"]

T = TypeVar("T")


class Durability(enum.StrEnum):
    COMMIT = "commit"
    GROUP = "group"
    FSYNC = "fsync"
    GROUP_FSYNC = "group_fsync"

    @property
    def inline(self) -> bool:
        """Whether commits run on the event loop (no fsync) rather than a worker thread."""
        return self in (
            "commit",
            "group",
        )  # by value: a member lookup on an Enum class is slow on 3.11

    @property
    def grouped(self) -> bool:
        return self in ("group", "group_fsync")


# A checkpoint is due once the WAL has grown by about this many pages (4 MB of 4 KB
# pages), or this many seconds after the last one if anything was committed since. SQLite's
# own automatic checkpoint, which runs inside a commit (on the event loop), is turned off
# for ours, which runs on a worker thread. The bound matters beyond speed: SQLite drops the
# WAL's frames from the first damaged one on, silently, so what lives only in the WAL is
# the history a single flipped byte can erase.
CHECKPOINT_PAGES = 1_000
CHECKPOINT_S = 30.0
_PAGES_PER_COMMIT = 3  # the table, index and run-list pages a commit rewrites at least
_ROWS_PER_PAGE = 8  # events of a few hundred bytes, with their index entries


class _Busy(Exception):
    """An inline commit found the write lock held by another process: it is redone on a
    worker thread, which may wait for the lock."""


class _Waiter:
    """One run's batch of events and its fence, or a change to leases (``change``), queued
    for the next commit."""

    __slots__ = ("run_id", "events", "fence", "change", "error", "token", "outcome")

    def __init__(
        self,
        run_id: str,
        events: Sequence[StoredEvent],
        fence: Fence | None,
        change: Callable[[sqlite3.Connection, float], Any] | None = None,
    ) -> None:
        self.run_id = run_id
        self.events = events
        self.fence = fence
        self.change = change
        self.error: BaseException | None = None
        self.token = 0  # the token the writer holds once the batch is stored
        self.outcome: Any = None  # what ``change`` returned


@final
class SqliteStore:
    """Open with ``await SqliteStore.open(path)``, or ``async with SqliteStore.open(path)``."""

    def __init__(
        self,
        path: str | Path,
        durability: Durability | str = Durability.COMMIT,
        *,
        checkpoint_pages: int = CHECKPOINT_PAGES,
        checkpoint_s: float = CHECKPOINT_S,
        read_only: bool = False,
        create: bool = True,
    ) -> None:
        self.path = str(path)
        self.durability = Durability(durability)
        if checkpoint_pages < 1:
            raise ConfigError(f"checkpoint_pages must be at least 1, not {checkpoint_pages!r}")
        if not checkpoint_s > 0:
            raise ConfigError(f"checkpoint_s must be more than 0, not {checkpoint_s!r}")
        # How far the WAL grows, and how long it goes, before a checkpoint folds it back.
        self.checkpoint_pages, self.checkpoint_s = checkpoint_pages, checkpoint_s
        self.read_only, self.create = read_only, create
        self._identity: FileIdentity | None = None  # the files opened (None: in memory)
        self._last_checkpoint = time.monotonic()
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._queue: list[_Waiter] = []
        self._queued_done: anyio.Event | None = (
            None  # set once the queued waiters' group has committed
        )
        self._flushing = False
        self._wal_pages = (
            0  # an estimate of the pages the WAL has grown by since the last checkpoint
        )
        # Set while the writer connection is in use on a worker thread (a checkpoint, or a
        # commit that waits out another process's lock): other writes wait for it.
        self._off_loop: anyio.Event | None = None
        self.checkpoints = 0  # checkpoints completed
        self.checkpoint_error: StoreError | None = (
            None  # why the last checkpoint failed, until one succeeds
        )
        self.appends = 0  # append calls, for complexity checks
        self.commits = (
            0  # write transactions (events and leases), for the bench and complexity checks
        )

    @classmethod
    def open(
        cls,
        path: str | Path,
        durability: Durability | str = Durability.COMMIT,
        *,
        checkpoint_pages: int = CHECKPOINT_PAGES,
        checkpoint_s: float = CHECKPOINT_S,
        read_only: bool = False,
        create: bool = True,
    ) -> _Opening:
        """The store on ``path``. read_only: no writes, nothing created, the file must be a
        router log. create: False to refuse a file that is not a router log already."""
        return _Opening(
            cls(
                path,
                durability,
                checkpoint_pages=checkpoint_pages,
                checkpoint_s=checkpoint_s,
                read_only=read_only,
                create=create,
            )
        )

    async def _connect(self) -> None:
        try:
            if not self.read_only:  # on a worker thread: it may wait for another's lock
                await anyio.to_thread.run_sync(self._open_writer)
            self._reader = await connect_reader(self.path, read_only=self.read_only)
        except sqlite3.Error as exc:
            await self.aclose()
            raise store_error(self.path, "opening the store", exc) from exc
        except BaseException:
            await self.aclose()
            raise

    def _open_writer(self) -> None:
        if not self.create and not Path(self.path).is_file():
            raise StoreError(f"{self.path}: no such file")
        self._writer = conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        tables, version = read_layout(conn)
        check_log(self.path, tables, version, empty_ok=self.create)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal" and self.path != ":memory:":
            raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {'NORMAL' if self.durability.inline else 'FULL'}")
        if version == 2:
            conn.executescript(f"BEGIN IMMEDIATE; {FROM_2} COMMIT;")
        conn.executescript(SCHEMA)
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _checkpoint_if_due
        if self.durability.inline:  # an inline commit never waits for a lock: see _write
            conn.execute("PRAGMA busy_timeout = 0")
        if self.path != ":memory:":
            self._identity = file_identity(self.path)

    async def aclose(self) -> None:
        while self._off_loop is not None:
            await self._off_loop.wait()
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            # On a worker thread: the last connection to close folds the WAL into the file.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(writer.close, limiter=self._limiter)

    # --- writes -----------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreError(
                f"{self.path}: opened read-only" if self.read_only else "the store is closed"
            )
        return self._writer

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        while self._off_loop is not None:  # writes pause while the writer is on a thread
            await self._off_loop.wait()
        if self.durability.inline:
            try:
                return fn(*args)
            except _Busy:  # another process holds the write lock: wait for it off the loop
                return await self._on_thread(self._patiently, fn, *args)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` with the writer connection on a worker thread; the store's other
        writes wait for it, the event loop goes on."""
        self._off_loop = anyio.Event()
        try:
            with anyio.CancelScope(shield=True):  # the writer connection is in use until it ends
                outcome = await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
            return outcome
        finally:
            done, self._off_loop = self._off_loop, None
            done.set()

    def _patiently(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn`` with the busy timeout on (on a worker thread)."""
        conn = self._conn()
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            return fn(*args)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    async def _checkpoint_if_due(self) -> None:
        """Fold the WAL into the database file on a worker thread, once it has grown enough
        or aged enough. The writer that made it due waits for it, other writes wait in
        ``_write``; the event loop goes on."""
        if self._off_loop is not None or not self._wal_pages:
            return
        if (
            self._wal_pages < self.checkpoint_pages
            and time.monotonic() - self._last_checkpoint < self.checkpoint_s
        ):
            return
        self._wal_pages = 0
        await self._on_thread(self._fold_wal)

    def _fold_wal(self) -> None:
        try:
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (
            sqlite3.Error
        ) as exc:  # nothing is lost: the WAL keeps every commit until one succeeds
            self.checkpoint_error = StoreError(f"{self.path}: checkpoint failed: {exc}")
            return
        self.checkpoint_error = None
        self.checkpoints += 1
        self._last_checkpoint = time.monotonic()

    async def append(self, events: Sequence[StoredEvent], *, fence: Fence | None = None) -> int:
        run_id = batch_run(events, fence)
        if not run_id:
            return 0
        self.appends += 1
        waiter = _Waiter(run_id, events, fence)
        await self._submit(waiter)
        return waiter.token

    async def _submit(self, waiter: _Waiter) -> None:
        """Commit the waiter's lease change and events, alone or with its group; raise its error."""
        if self.durability.grouped:
            await self._grouped(waiter)
            return
        await self._write(self._commit, [waiter])
        await self._checkpoint_if_due()
        if waiter.error is not None:
            raise waiter.error

    async def _grouped(self, waiter: _Waiter) -> None:
        """Queue the waiter for the next group commit, leading it if none is under way.
        The waiters of one group share one event, set once their commit is done."""
        self._queue.append(waiter)
        if self._flushing:
            done = self._queued_done
            if done is None:
                done = self._queued_done = anyio.Event()
            try:
                await done.wait()
            except anyio.get_cancelled_exc_class():
                if self._withdraw(waiter):
                    raise  # not committed, and now never will be
                # Its group's commit is under way or done: the caller must learn the outcome,
                # so the cancellation waits for the caller's next checkpoint.
                with anyio.CancelScope(shield=True):
                    await done.wait()
        else:
            self._flushing = True
            try:
                # Shielded: the leader commits for everyone queued, even if it is cancelled.
                with anyio.CancelScope(shield=True):
                    if self.durability.inline:
                        # Let the other runs of this turn of the loop queue their batches.
                        await anyio.lowlevel.checkpoint()
                    while self._queue:
                        group, done = self._queue, self._queued_done
                        self._queue, self._queued_done = [], None
                        try:
                            await self._write(self._commit, group)
                        except BaseException as exc:
                            self._refuse(group, exc)
                            raise
                        finally:  # even if it raised: its waiters, cancelled or not, wait for it
                            if done is not None:
                                done.set()
                        await self._checkpoint_if_due()  # the group's runs go on meanwhile
            finally:
                self._flushing = False
        if waiter.error is not None:
            raise waiter.error

    def _withdraw(self, waiter: _Waiter) -> bool:
        """Take a cancelled waiter out of the queue if its group has not been taken for a
        commit yet; False if that commit is under way or done, and cannot be taken back."""
        try:
            self._queue.remove(waiter)  # a _Waiter equals only itself
        except ValueError:
            return False
        if not self._queue:
            self._queued_done = None  # nobody else waits on it
        return True

    def _refuse(self, group: list[_Waiter], exc: BaseException) -> None:
        """Give each waiter of a group whose commit raised (a closed store) that outcome."""
        error = StoreError(f"{self.path}: write failed: {exc}")
        error.__cause__ = exc
        for w in group:
            w.error = error

    def _commit(self, group: list[_Waiter]) -> None:
        """One transaction for the group's lease changes and batches of events, in the order
        they were asked for; each waiter gets its own outcome. A waiter whose lease change is
        refused appends nothing. If a batch does not continue its chain, the transaction is
        redone with a savepoint per waiter: that waiter alone is refused, the others commit."""
        conn = self._conn()
        try:
            if self._identity is not None and file_identity(self.path) != self._identity:
                raise StoreLost(self.path, "the database file was replaced")
        except StoreLost as exc:
            for w in group:
                w.error = exc
            return
        try:
            try:
                self._transaction(conn, lambda: self._apply_all(conn, group))
            except sqlite3.IntegrityError as exc:
                if len(group) == 1 and group[0].events:  # nothing else to save
                    first = group[0].events[0]
                    group[0].error = SeqConflict(first.run_id, first.seq, str(exc))
                    return
                self._transaction(conn, lambda: self._apply_each(conn, group))

        except sqlite3.Error as exc:
            if is_busy(exc) and self.durability.inline and self._off_loop is None:
                raise _Busy from exc  # nothing was written: _write redoes it on a thread
            error = store_error(self.path, "write", exc)
            for w in group:
                w.error = error
            return
        self._committed(sum(len(w.events) for w in group) // _ROWS_PER_PAGE)

    def _apply_all(self, conn: sqlite3.Connection, group: list[_Waiter]) -> None:
        now = time.time()
        for w in group:
            if w.change is not None:
                w.outcome = w.change(conn, now)
            else:
                w.error, w.token = leases.check_fence(conn, w.run_id, w.fence, now)
        conn.executemany(  # a StoredEvent's fields are the columns
            INSERT, map(astuple, chain.from_iterable([w.events for w in group if not w.error]))
        )
        for w in group:
            if w.error is None and w.fence is not None and w.events:
                w.token = leases.apply_fence(conn, w.run_id, w.fence, w.token)

    def _apply_each(self, conn: sqlite3.Connection, group: list[_Waiter]) -> None:
        now = time.time()
        for w in group:
            conn.execute("SAVEPOINT waiter")
            try:
                if w.change is not None:
                    w.outcome = w.change(conn, now)
                else:
                    w.error, w.token = leases.check_fence(conn, w.run_id, w.fence, now)
                if w.error is None and w.events:
                    conn.executemany(INSERT, map(astuple, w.events))
                    if w.fence is not None:
                        w.token = leases.apply_fence(conn, w.run_id, w.fence, w.token)
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK TO waiter")
                first = w.events[0] if w.events else None
                w.error = SeqConflict(w.run_id, first.seq if first else -1, str(exc))
            conn.execute("RELEASE waiter")

    def _committed(self, rows_pages: int = 0) -> None:
        """Count a write transaction and the WAL pages it is likely to have written."""
        self.commits += 1
        self._wal_pages += _PAGES_PER_COMMIT + rows_pages

    @staticmethod
    def _transaction(conn: sqlite3.Connection, body: Callable[[], object]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            body()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # --- leases -----------------------------------------------------------------------

    async def _lease_write(self, change: Callable[[sqlite3.Connection, float], T]) -> T:
        """Apply ``change`` to the leases in the next write transaction (with a group's
        batches, when grouped); what it returns."""
        self._conn()  # raises if the store is closed or read-only
        waiter = _Waiter("", (), None, change)
        await self._submit(waiter)
        return waiter.outcome  # type: ignore[no-any-return]

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> Lease:
        outcome = await self._lease_write(
            lambda conn, now: leases.take_lease(conn, run_id, owner, ttl_s, now)
        )
        if isinstance(outcome, LeaseHeld):
            raise outcome
        return outcome

    async def renew_leases(self, held: Sequence[Lease], ttl_s: float) -> list[Lease]:
        if not held:
            return []
        return await self._lease_write(lambda conn, now: leases.renew(conn, held, ttl_s, now))

    async def release_lease(
        self, run_id: str, owner: str, token: int = 0, status: str = ""
    ) -> None:
        if self._writer is None or not owner:
            return
        await self._lease_write(
            lambda conn, now: leases.release(conn, run_id, owner, token, status)
        )

    async def break_lease(self, run_id: str) -> None:
        await self._lease_write(lambda conn, now: leases.break_lease(conn, run_id))

    async def claim(self, owner: str, ttl_s: float, limit: int) -> list[Lease]:
        return await self._lease_write(
            lambda conn, now: leases.claim(conn, owner, ttl_s, limit, now)
        )

    # --- reads ------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._reader is None:
            raise StoreError("the store is closed")
        try:
            return await self._reader.execute_fetchall(sql, params)
        except sqlite3.Error as exc:
            raise store_error(self.path, "reading the log", exc) from exc

    async def read(self, run_id: str, after: int = -1) -> list[StoredEvent]:
        rows = await self._fetch(
            "SELECT seq, kind, payload, prev_hash, hash FROM events "
            "WHERE run_id = ? AND seq > ? ORDER BY seq",
            (run_id, after),
        )
        return [StoredEvent(run_id, *row) for row in rows]

    async def runs(self) -> list[RunSummary]:
        rows = await self._fetch(
            "SELECT r.run_id, e.seq + 1, e.kind, coalesce(l.status, 'active') FROM runs r "
            "JOIN events e ON e.run_id = r.run_id "
            "AND e.seq = (SELECT MAX(seq) FROM events WHERE run_id = r.run_id) "
            "LEFT JOIN leases l ON l.run_id = r.run_id ORDER BY r.n"
        )
        return [RunSummary(*row) for row in rows]

    async def scan(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, StoredEvent]]:
        rows = await self._fetch(
            "SELECT id, run_id, seq, kind, payload, prev_hash, hash FROM events "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [(row[0], StoredEvent(*row[1:])) for row in rows]


class _Opening:
    """``await SqliteStore.open(...)`` or ``async with SqliteStore.open(...) as store``."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __await__(self) -> Any:
        return self._open().__await__()

    async def _open(self) -> SqliteStore:
        await self._store._connect()
        return self._store

    async def __aenter__(self) -> SqliteStore:
        return await self._open()

    async def __aexit__(self, *exc: object) -> None:
        await self._store.aclose()
