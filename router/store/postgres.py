"""The PostgreSQL store: many replicas share one log (the ``postgres`` extra, asyncpg).

The database itself enforces the log, whoever the writer is: triggers refuse UPDATE and
DELETE on the events table, and refuse an INSERT whose seq or prev_hash does not continue
the run's chain. An application role needs only INSERT and SELECT on ``router_events`` and
EXECUTE on the ``router_*`` functions (which run as their owner and keep the leases and run
list). An append is one round trip: one call of ``router_append``, which checks the lease,
inserts the batch and takes, renews or releases the lease in one transaction. A lease's
expiry is judged on the database's clock (``clock_timestamp()``), never the writer's.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, final

from ..core.events import StoredEvent
from ..core.protocols import Lease, LeaseChange, RunSummary
from ..errors import LeaseHeld, SeqConflict, StoreError

__all__ = ["PostgresStore"]

_SCHEMA = r"""
CREATE TABLE IF NOT EXISTS router_events (
    id        BIGSERIAL PRIMARY KEY,
    run_id    TEXT   NOT NULL,
    seq       BIGINT NOT NULL,
    kind      TEXT   NOT NULL,
    payload   BYTEA  NOT NULL,
    prev_hash BYTEA  NOT NULL,
    hash      BYTEA  NOT NULL,
    UNIQUE (run_id, seq)
);
CREATE TABLE IF NOT EXISTS router_leases (
    run_id     TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE OR REPLACE FUNCTION router_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'router: the event log is append-only; % is refused', TG_OP
        USING ERRCODE = 'RT010';
END $$;
CREATE OR REPLACE TRIGGER router_events_refuse_change BEFORE UPDATE OR DELETE ON router_events
    FOR EACH ROW EXECUTE FUNCTION router_refuse_change();
CREATE OR REPLACE TRIGGER router_events_refuse_truncate BEFORE TRUNCATE ON router_events
    FOR EACH STATEMENT EXECUTE FUNCTION router_refuse_change();

CREATE OR REPLACE FUNCTION router_continue_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE previous BYTEA;
BEGIN
    IF NEW.seq = 0 THEN
        previous := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    ELSE
        SELECT hash INTO previous FROM router_events
        WHERE run_id = NEW.run_id AND seq = NEW.seq - 1;
        IF previous IS NULL THEN
            RAISE EXCEPTION 'router: seq % of run % does not follow its last event',
                NEW.seq, NEW.run_id USING ERRCODE = 'RT002';
        END IF;
    END IF;
    IF NEW.prev_hash <> previous THEN
        RAISE EXCEPTION 'router: prev_hash of seq % of run % is not the previous hash',
            NEW.seq, NEW.run_id USING ERRCODE = 'RT002';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER router_events_continue_chain BEFORE INSERT ON router_events
    FOR EACH ROW EXECUTE FUNCTION router_continue_chain();

CREATE OR REPLACE FUNCTION router_take_lease(p_run TEXT, p_owner TEXT, p_ttl DOUBLE PRECISION)
RETURNS DOUBLE PRECISION LANGUAGE plpgsql AS $$
DECLARE held_by TEXT; expires TIMESTAMPTZ;
BEGIN
    expires := clock_timestamp() + make_interval(secs => p_ttl);
    INSERT INTO router_leases AS l (run_id, owner, expires_at) VALUES (p_run, p_owner, expires)
    ON CONFLICT (run_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
        WHERE l.owner = EXCLUDED.owner OR l.expires_at <= clock_timestamp()
    RETURNING owner INTO held_by;
    IF held_by IS NULL THEN
        SELECT owner, expires_at INTO held_by, expires FROM router_leases WHERE run_id = p_run;
        RAISE EXCEPTION '%', held_by USING ERRCODE = 'RT001', DETAIL = extract(epoch FROM expires);
    END IF;
    RETURN extract(epoch FROM expires);
END $$;

CREATE OR REPLACE FUNCTION router_append(
    p_run TEXT, p_seq BIGINT[], p_kind TEXT[], p_payload BYTEA[], p_prev BYTEA[], p_hash BYTEA[],
    p_owner TEXT, p_ttl DOUBLE PRECISION, p_lease SMALLINT
) RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    IF p_lease = 1 THEN
        PERFORM router_take_lease(p_run, p_owner, p_ttl);
    END IF;
    INSERT INTO router_events (run_id, seq, kind, payload, prev_hash, hash)
    SELECT p_run, s, k, p, ph, h
    FROM unnest(p_seq, p_kind, p_payload, p_prev, p_hash) AS t(s, k, p, ph, h)
    ORDER BY s;
    IF p_lease = 2 THEN
        DELETE FROM router_leases WHERE run_id = p_run AND owner = p_owner;
    END IF;
END $$;
"""

_NO_LEASE, _TAKE, _RELEASE = 0, 1, 2
_COLUMNS = "run_id, seq, kind, payload, prev_hash, hash"


@final
class PostgresStore:
    """A store on a PostgreSQL database, shared by every process that opens it.

    Open it with ``async with PostgresStore.open(dsn) as store`` (or ``await``). The schema
    is created if it is missing. Raises StoreError if asyncpg is not installed
    (``pip install "router[postgres]"``) or the server cannot be reached.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    def open(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> _Opening:
        return _Opening(dsn, min_size, max_size)

    async def append(
        self, events: Sequence[StoredEvent], *, lease: LeaseChange | None = None
    ) -> None:
        if not events:
            if lease is not None:
                raise StoreError(
                    "a lease change goes with events; use acquire_lease or release_lease alone"
                )
            return
        run_id = events[0].run_id
        if any(e.run_id != run_id for e in events):
            raise StoreError("one append holds the events of one run")
        mode = _NO_LEASE if lease is None else _TAKE if lease.ttl_s is not None else _RELEASE
        args = (
            run_id,
            [e.seq for e in events],
            [e.kind for e in events],
            [e.payload for e in events],
            [e.prev_hash for e in events],
            [e.hash for e in events],
            lease.owner if lease is not None else "",
            lease.ttl_s or 0.0 if lease is not None else 0.0,
            mode,
        )
        await self._call(
            "SELECT router_append($1, $2, $3, $4, $5, $6, $7, $8, $9::smallint)",
            args,
            run_id,
            events,
        )

    async def _call(
        self, sql: str, args: tuple[Any, ...], run_id: str, events: Sequence[StoredEvent]
    ) -> Any:
        import asyncpg

        try:
            return await self._pool.fetchval(sql, *args)
        except asyncpg.PostgresError as exc:
            code = getattr(exc, "sqlstate", "")
            seq = events[0].seq if events else -1
            if code == "RT001":
                until = float(getattr(exc, "detail", None) or 0.0)
                raise LeaseHeld(run_id, str(getattr(exc, "message", exc)), until) from exc
            if code in ("RT002", "23505"):
                raise SeqConflict(run_id, seq, str(getattr(exc, "message", exc))) from exc
            raise StoreError(f"PostgreSQL refused an append to run {run_id!r}: {exc}") from exc

    async def read(self, run_id: str, after: int = -1) -> list[StoredEvent]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM router_events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
            run_id,
            after,
        )
        return [StoredEvent(*row) for row in rows]

    async def runs(self) -> list[RunSummary]:
        rows = await self._pool.fetch(
            "SELECT run_id, count(*), (array_agg(kind ORDER BY seq DESC))[1] FROM router_events "
            "GROUP BY run_id ORDER BY min(id)"
        )
        return [RunSummary(row[0], row[1], row[2]) for row in rows]

    async def scan(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, StoredEvent]]:
        rows = await self._pool.fetch(
            f"SELECT id, {_COLUMNS} FROM router_events WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [(row[0], StoredEvent(*row[1:])) for row in rows]

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> Lease:
        expires = await self._call(
            "SELECT router_take_lease($1, $2, $3)", (run_id, owner, ttl_s), run_id, ()
        )
        return Lease(run_id, owner, float(expires))

    async def release_lease(self, run_id: str, owner: str) -> None:
        await self._pool.execute(
            "DELETE FROM router_leases WHERE run_id = $1 AND owner = $2", run_id, owner
        )

    async def break_lease(self, run_id: str) -> None:
        await self._pool.execute("DELETE FROM router_leases WHERE run_id = $1", run_id)

    async def aclose(self) -> None:
        await self._pool.close()


@final
class _Opening:
    def __init__(self, dsn: str, min_size: int, max_size: int) -> None:
        self._dsn, self._min, self._max = dsn, min_size, max_size
        self._store: PostgresStore | None = None

    def __await__(self) -> Any:
        return self._open().__await__()

    async def _open(self) -> PostgresStore:
        try:
            import asyncpg
        except ImportError as exc:
            raise StoreError(
                'the PostgreSQL store needs asyncpg: pip install "router[postgres]"'
            ) from exc
        try:
            pool = await asyncpg.create_pool(self._dsn, min_size=self._min, max_size=self._max)
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock(7294001)")  # one schema setup at a time
                try:
                    await conn.execute(_SCHEMA)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(7294001)")
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot open the PostgreSQL store: {exc}") from exc
        self._store = PostgresStore(pool)
        return self._store

    async def __aenter__(self) -> PostgresStore:
        return await self._open()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._store is not None:
            await self._store.aclose()
