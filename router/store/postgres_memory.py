"""Long-term memory on PostgreSQL (the ``postgres`` extra): ``PostgresMemory.open(dsn)``,
beside the PostgreSQL store, for many replicas.

The same tables, ranking and first pass as the SQLite memory (router.memory.ranking), so a
search gives the same results on either: each process keeps a namespace's first pass and
reloads it when the namespace's version, bumped in every write's transaction, has moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, final

from ..core.protocols import MemoryItem, RankWeights, Recalled
from ..memory.ranking import FirstPass, FirstPasses, evicted, first_pass_size, rank, stored_rows
from .postgres import PoolOpening

__all__ = ["PostgresMemory"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS router_memory (
    namespace    TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    vector       BYTEA   NOT NULL,
    code         BYTEA   NOT NULL,
    importance   DOUBLE PRECISION NOT NULL,
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    ttl_us       BIGINT  NOT NULL,
    PRIMARY KEY (namespace, id)
);
CREATE TABLE IF NOT EXISTS router_memory_versions (
    namespace TEXT PRIMARY KEY,
    version   BIGINT NOT NULL
);
"""
_BUMP = (
    "INSERT INTO router_memory_versions VALUES ($1, 1) "
    "ON CONFLICT (namespace) DO UPDATE SET version = router_memory_versions.version + 1"
)
_LIVE = "namespace = $1 AND (expires_at = 0 OR expires_at > $2)"
_COLUMNS = "id, text, vector, importance, last_used_at"


@final
class PostgresMemory:
    """See the module's docs. Open with ``async with PostgresMemory.open(dsn)`` or await."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._passes = FirstPasses()

    @classmethod
    def open(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 10
    ) -> PoolOpening[PostgresMemory]:
        return PoolOpening(dsn, min_size, max_size, _SCHEMA, cls)

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
        rows = stored_rows(items)
        namespace = rows[0][0]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO router_memory VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
                "ON CONFLICT (namespace, id) DO UPDATE SET text = EXCLUDED.text, "
                "vector = EXCLUDED.vector, code = EXCLUDED.code, importance = "
                "EXCLUDED.importance, created_at = EXCLUDED.created_at, last_used_at = "
                "EXCLUDED.last_used_at, expires_at = EXCLUDED.expires_at, ttl_us = EXCLUDED.ttl_us",
                rows,
            )
            gone: list[str] = []
            if max_items is not None:
                present = await conn.fetch(
                    "SELECT id, importance, last_used_at FROM router_memory WHERE namespace = $1",
                    namespace,
                )
                gone = evicted(
                    [(r[0], r[1], r[2]) for r in present],
                    max_items,
                    by=evict_by,
                    weights=weights or RankWeights(),
                    now_us=max(row[7] for row in rows),
                )
                await conn.execute(
                    "DELETE FROM router_memory WHERE namespace = $1 AND id = ANY($2::text[])",
                    namespace,
                    gone,
                )
            await conn.execute(_BUMP, namespace)
        return len(gone)

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
        if exact:
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM router_memory WHERE {_LIVE}", namespace, now_us
            )
        else:
            first = await self._first_pass(namespace, weights.half_life_days)
            ids = first.candidates(
                vector, now_us=now_us, weights=weights, count=first_pass_size(limit)
            )
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM router_memory WHERE {_LIVE} AND id = ANY($3::text[])",
                namespace,
                now_us,
                ids,
            )
        found = rank([tuple(r) for r in rows], vector, now_us=now_us, weights=weights, limit=limit)
        if found:
            used = [r.id for r in found]
            await self._pool.execute(
                "UPDATE router_memory SET last_used_at = $2, expires_at = CASE WHEN ttl_us > 0 "
                "THEN $2 + ttl_us ELSE expires_at END "
                "WHERE namespace = $1 AND id = ANY($3::text[])",
                namespace,
                now_us,
                used,
            )
            self._passes.used(namespace, used, now_us)
        return found

    async def _first_pass(self, namespace: str, half_life_days: float) -> FirstPass:
        version = await self._pool.fetchval(
            "SELECT version FROM router_memory_versions WHERE namespace = $1", namespace
        )
        version = version or 0
        first = self._passes.get(namespace, version, half_life_days)
        if first is not None:
            return first
        rows = await self._pool.fetch(
            "SELECT id, code, importance, last_used_at, expires_at FROM router_memory "
            "WHERE namespace = $1",
            namespace,
        )
        return self._passes.load(namespace, version, half_life_days, [tuple(r) for r in rows])

    async def _delete(self, namespace: str, where: str, *args: Any) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                f"DELETE FROM router_memory WHERE namespace = $1 AND {where}", namespace, *args
            )
            await conn.execute(_BUMP, namespace)
        return int(status.split()[-1])

    async def forget(self, namespace: str, ids: Sequence[str]) -> int:
        return await self._delete(namespace, "id = ANY($2::text[])", list(ids)) if ids else 0

    async def evict(self, namespace: str, *, now_us: int) -> int:
        return await self._delete(namespace, "expires_at > 0 AND expires_at <= $2", now_us)

    async def count(self, namespace: str) -> int:
        return int(
            await self._pool.fetchval(
                "SELECT count(*) FROM router_memory WHERE namespace = $1", namespace
            )
        )

    async def aclose(self) -> None:
        await self._pool.close()
