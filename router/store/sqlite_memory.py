"""Long-term memory on SQLite: ``SqliteMemory.open(path)`` (a file of its own, or the run
log's file: the tables do not meet).

One table holds every namespace's items, keyed by (namespace, id). A search's first pass
(router.memory.ranking.FirstPass) runs in memory over the namespace's sign codes, cached per
process and reloaded when the namespace's version (bumped by every write, in the same
transaction) has moved; the candidates it keeps are then read and scored exactly. Eviction: by
expiry (``evict``), and by a count cap on each write (``put(max_items=)``), lowest score
without a query (recency and importance) or least recently used first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, final

import aiosqlite
import anyio

from ..core.protocols import MemoryItem, RankWeights, Recalled
from ..memory.ranking import FirstPass, FirstPasses, evicted, first_pass_size, rank, stored_rows

__all__ = ["SqliteMemory"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS router_memory (
    namespace    TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    vector       BLOB    NOT NULL,
    code         BLOB    NOT NULL,
    importance   REAL    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ttl_us       INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS router_memory_versions (
    namespace TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
) WITHOUT ROWID;
"""
_BUMP = (
    "INSERT INTO router_memory_versions VALUES (?, 1) "
    "ON CONFLICT (namespace) DO UPDATE SET version = version + 1"
)
_LIVE = "namespace = ? AND (expires_at = 0 OR expires_at > ?)"


@final
class SqliteMemory:
    """See the module's docs. Open with ``async with SqliteMemory.open(path)`` or await."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = anyio.Lock()  # one connection: its transactions one at a time
        self._passes = FirstPasses()

    @classmethod
    def open(cls, path: str | Path) -> _Opening:
        return _Opening(path)

    async def put(
        self,
        items: Sequence[MemoryItem],
        *,
        max_items: int | None = None,
        evict_by: Literal["score", "lru"] = "score",
        weights: RankWeights | None = None,
    ) -> int:
        if not items:
            return 0
        async with self._lock:
            return await self._put(items, max_items, evict_by, weights)

    async def _put(
        self,
        items: Sequence[MemoryItem],
        max_items: int | None,
        evict_by: str,
        weights: RankWeights | None,
    ) -> int:
        rows = stored_rows(items)
        namespace = rows[0][0]
        gone = 0
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            await self._db.executemany(
                "INSERT OR REPLACE INTO router_memory VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            if max_items is not None:
                async with self._db.execute(
                    "SELECT id, importance, last_used_at FROM router_memory WHERE namespace = ?",
                    (namespace,),
                ) as cursor:
                    present = [(r[0], r[1], r[2]) for r in await cursor.fetchall()]
                doomed = evicted(
                    present,
                    max_items,
                    by=evict_by,
                    weights=weights or RankWeights(),
                    now_us=max(row[7] for row in rows),
                )
                await self._db.executemany(
                    "DELETE FROM router_memory WHERE namespace = ? AND id = ?",
                    [(namespace, d) for d in doomed],
                )
                gone = len(doomed)
            await self._db.execute(_BUMP, (namespace,))
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        return gone

    async def _delete(self, namespace: str, where: str, args: Sequence[Any]) -> int:
        """Delete the namespace's items ``where`` says, and bump its version, atomically."""
        async with self._lock:
            return await self._delete_now(namespace, where, args)

    async def _delete_now(self, namespace: str, where: str, args: Sequence[Any]) -> int:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = await self._db.execute(
                f"DELETE FROM router_memory WHERE namespace = ? AND {where}", (namespace, *args)
            )
            await self._db.execute(_BUMP, (namespace,))
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        return cursor.rowcount

    async def search(
        self,
        namespace: str,
        vector: bytes,
        *,
        limit: int,
        now_us: int,
        weights: RankWeights,
        exact: bool = False,
    ) -> list[Recalled]:
        async with self._lock:
            return await self._search(namespace, vector, limit, now_us, weights, exact)

    async def _search(
        self,
        namespace: str,
        vector: bytes,
        limit: int,
        now_us: int,
        weights: RankWeights,
        exact: bool,
    ) -> list[Recalled]:
        columns = "id, text, vector, importance, last_used_at"
        if exact:
            async with self._db.execute(
                f"SELECT {columns} FROM router_memory WHERE {_LIVE}", (namespace, now_us)
            ) as cursor:
                found = rank(
                    await cursor.fetchall(), vector, now_us=now_us, weights=weights, limit=limit
                )
        else:
            first = await self._first_pass(namespace, weights.half_life_days)
            ids = first.candidates(
                vector, now_us=now_us, weights=weights, count=first_pass_size(limit)
            )
            marks = ",".join("?" * len(ids))
            async with self._db.execute(
                f"SELECT {columns} FROM router_memory WHERE {_LIVE} AND id IN ({marks})",
                (namespace, now_us, *ids),
            ) as cursor:
                found = rank(
                    await cursor.fetchall(), vector, now_us=now_us, weights=weights, limit=limit
                )
        if found:
            used = [r.id for r in found]
            await self._touch(namespace, used, now_us)
            self._passes.used(namespace, used, now_us)
        return found

    async def _first_pass(self, namespace: str, half_life_days: float) -> FirstPass:
        async with self._db.execute(
            "SELECT version FROM router_memory_versions WHERE namespace = ?", (namespace,)
        ) as cursor:
            row = await cursor.fetchone()
        version = row[0] if row else 0
        first = self._passes.get(namespace, version, half_life_days)
        if first is not None:
            return first
        async with self._db.execute(
            "SELECT id, code, importance, last_used_at, expires_at FROM router_memory "
            "WHERE namespace = ?",
            (namespace,),
        ) as cursor:
            return self._passes.load(namespace, version, half_life_days, await cursor.fetchall())

    async def _touch(self, namespace: str, ids: list[str], now_us: int) -> None:
        marks = ",".join("?" * len(ids))
        await self._db.execute(
            "UPDATE router_memory SET last_used_at = ?, expires_at = CASE WHEN ttl_us > 0 "
            f"THEN ? + ttl_us ELSE expires_at END WHERE namespace = ? AND id IN ({marks})",
            (now_us, now_us, namespace, *ids),
        )

    async def forget(self, namespace: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return await self._delete(namespace, f"id IN ({','.join('?' * len(ids))})", ids)

    async def evict(self, namespace: str, *, now_us: int) -> int:
        return await self._delete(namespace, "expires_at > 0 AND expires_at <= ?", (now_us,))

    async def count(self, namespace: str) -> int:
        async with (
            self._lock,
            self._db.execute(
                "SELECT count(*) FROM router_memory WHERE namespace = ?", (namespace,)
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def aclose(self) -> None:
        await self._db.close()


@final
class _Opening:
    def __init__(self, path: str | Path) -> None:
        self._path = path
        self._memory: SqliteMemory | None = None

    def __await__(self) -> Any:
        return self._open().__await__()

    async def _open(self) -> SqliteMemory:
        db = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA busy_timeout = 5000")
            await db.executescript(_SCHEMA)
        except BaseException:
            await db.close()
            raise
        self._memory = SqliteMemory(db)
        return self._memory

    async def __aenter__(self) -> SqliteMemory:
        return await self._open()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._memory is not None:
            await self._memory.aclose()
