"""The PostgreSQL store: many replicas share one log (the ``postgres`` extra, asyncpg).

The database itself enforces the log, whoever the writer is: triggers refuse UPDATE and
DELETE on the events table, and refuse an INSERT whose seq or prev_hash does not continue
the run's chain. An application role needs INSERT and SELECT on ``router_events`` (and
USAGE on its id sequence), never UPDATE or DELETE, and SELECT, INSERT and UPDATE on
``router_leases``, the one mutable table (leases, fencing tokens, statuses for workers).
An append is one round trip: one call of ``router_append``, which checks the writer's
fencing token, inserts the batch and takes or releases the lease in one transaction. A
lease's expiry is judged on the database's clock (``clock_timestamp()``), never the
writer's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar, final

from ..core.events import StoredEvent
from ..core.protocols import Fence, Lease, RunSummary
from ..errors import LeaseHeld, LeaseLost, NotALog, SeqConflict, StoreError
from . import batch_run

__all__ = ["PoolOpening", "PostgresStore"]

T = TypeVar("T")

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
-- A run's lease and its status for workers: owner '' when nobody holds it; token, the
-- run's fencing token, only grows. A row is made by the run's first fenced append.
CREATE TABLE IF NOT EXISTS router_leases (
    run_id     TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
ALTER TABLE router_leases ADD COLUMN IF NOT EXISTS token BIGINT NOT NULL DEFAULT 0;
ALTER TABLE router_leases ADD COLUMN IF NOT EXISTS status TEXT NOT NULL DEFAULT 'active';
CREATE INDEX IF NOT EXISTS router_leases_to_claim ON router_leases (status, expires_at);

CREATE OR REPLACE FUNCTION router_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'router: the event log is append-only; % is refused', TG_OP
        USING ERRCODE = 'RT010';
END $$;
CREATE OR REPLACE TRIGGER router_events_refuse_change BEFORE UPDATE OR DELETE ON router_events
    FOR EACH ROW EXECUTE FUNCTION router_refuse_change();
CREATE OR REPLACE TRIGGER router_events_refuse_truncate BEFORE TRUNCATE ON router_events
    FOR EACH STATEMENT EXECUTE FUNCTION router_refuse_change();

-- A lease changes hands but is never deleted, and its fencing token never goes back: a
-- writer fenced out stays fenced out whoever edits the table.
CREATE OR REPLACE FUNCTION router_guard_lease() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR NEW.token < OLD.token OR NEW.run_id <> OLD.run_id THEN
        RAISE EXCEPTION 'router: a lease is never deleted and its token only grows; % is refused',
            TG_OP USING ERRCODE = 'RT010';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER router_leases_guard BEFORE UPDATE OR DELETE ON router_leases
    FOR EACH ROW EXECUTE FUNCTION router_guard_lease();
CREATE OR REPLACE TRIGGER router_leases_refuse_truncate BEFORE TRUNCATE ON router_leases
    FOR EACH STATEMENT EXECUTE FUNCTION router_guard_lease();

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

DROP FUNCTION IF EXISTS router_take_lease(TEXT, TEXT, DOUBLE PRECISION);  -- an earlier layout
DROP FUNCTION IF EXISTS router_append(
    TEXT, BIGINT[], TEXT[], BYTEA[], BYTEA[], BYTEA[], TEXT, DOUBLE PRECISION, SMALLINT);

-- Take the run's lease for p_owner unless another owner holds it; bumps the token.
CREATE OR REPLACE FUNCTION router_take(p_run TEXT, p_owner TEXT, p_ttl DOUBLE PRECISION)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE held_by TEXT; expires TIMESTAMPTZ; taken BIGINT;
BEGIN
    INSERT INTO router_leases AS l (run_id, owner, expires_at, token)
    VALUES (p_run, p_owner, clock_timestamp() + make_interval(secs => p_ttl), 1)
    ON CONFLICT (run_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at,
        token = l.token + 1
        WHERE l.owner IN ('', EXCLUDED.owner) OR l.expires_at <= clock_timestamp()
    RETURNING token INTO taken;
    IF taken IS NULL THEN
        SELECT owner, expires_at INTO held_by, expires FROM router_leases WHERE run_id = p_run;
        RAISE EXCEPTION '%', held_by USING ERRCODE = 'RT001', DETAIL = extract(epoch FROM expires);
    END IF;
    RETURN taken;
END $$;

-- One append: check the writer's fence, insert the batch, take or release the lease.
-- p_token 0 with an owner takes the lease; a token must still be the run's (else RT003);
-- no owner: refused while anyone holds the lease. A release to 'active' wakes workers.
CREATE OR REPLACE FUNCTION router_append(
    p_run TEXT, p_seq BIGINT[], p_kind TEXT[], p_payload BYTEA[], p_prev BYTEA[], p_hash BYTEA[],
    p_owner TEXT, p_token BIGINT, p_ttl DOUBLE PRECISION, p_release BOOLEAN, p_status TEXT
) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE held_by TEXT; expires TIMESTAMPTZ; current BIGINT; token BIGINT := p_token;
BEGIN
    IF p_token > 0 THEN  -- FOR SHARE: a take waits until this append is committed
        SELECT l.token INTO current FROM router_leases l WHERE run_id = p_run FOR SHARE;
        IF current IS DISTINCT FROM p_token THEN
            RAISE EXCEPTION 'lost' USING ERRCODE = 'RT003';
        END IF;
    ELSIF p_owner = '' THEN
        SELECT owner, expires_at INTO held_by, expires FROM router_leases
        WHERE run_id = p_run AND owner <> '' AND expires_at > clock_timestamp() FOR SHARE;
        IF held_by IS NOT NULL THEN
            RAISE EXCEPTION '%', held_by
                USING ERRCODE = 'RT001', DETAIL = extract(epoch FROM expires);
        END IF;
    ELSE
        token := router_take(p_run, p_owner, p_ttl);
    END IF;
    INSERT INTO router_events (run_id, seq, kind, payload, prev_hash, hash)
    SELECT p_run, s, k, p, ph, h
    FROM unnest(p_seq, p_kind, p_payload, p_prev, p_hash) AS t(s, k, p, ph, h)
    ORDER BY s;
    IF p_release THEN
        UPDATE router_leases SET owner = '', expires_at = 'epoch', status = p_status
        WHERE run_id = p_run;
        IF p_status = 'active' THEN
            PERFORM pg_notify('router_runs', p_run);
        END IF;
        RETURN 0;
    END IF;
    RETURN token;
END $$;

-- A worker's claim: active runs whose lease lapsed, skipping rows another claimant locks.
CREATE OR REPLACE FUNCTION router_claim(p_owner TEXT, p_ttl DOUBLE PRECISION, p_limit INT)
RETURNS TABLE (run_id TEXT, token BIGINT, expires DOUBLE PRECISION) LANGUAGE sql AS $$
    WITH due AS (
        SELECT l.run_id FROM router_leases l
        WHERE l.status = 'active' AND l.expires_at <= clock_timestamp()
        ORDER BY l.expires_at LIMIT p_limit FOR UPDATE SKIP LOCKED
    )
    UPDATE router_leases l SET owner = p_owner, token = l.token + 1,
        expires_at = clock_timestamp() + make_interval(secs => p_ttl)
    FROM due WHERE l.run_id = due.run_id
    RETURNING l.run_id, l.token, extract(epoch FROM l.expires_at)::float8
$$;
"""

_UNFENCED = Fence("")
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
    def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        read_only: bool = False,
        create: bool = True,
    ) -> PoolOpening[PostgresStore]:
        """The store on ``dsn``. read_only: every session is read-only and nothing is
        created; create: False to refuse a database that holds no router log yet."""
        schema = _SCHEMA if create and not read_only else None
        return PoolOpening(dsn, min_size, max_size, schema, cls, read_only=read_only)

    async def append(self, events: Sequence[StoredEvent], *, fence: Fence | None = None) -> int:
        run_id = batch_run(events, fence)
        if not run_id:
            return 0
        fence = fence or _UNFENCED
        args = (
            run_id,
            [e.seq for e in events],
            [e.kind for e in events],
            [e.payload for e in events],
            [e.prev_hash for e in events],
            [e.hash for e in events],
            fence.owner,
            fence.token,
            fence.ttl_s,
            fence.release,
            fence.status,
        )
        sql = "SELECT router_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        return int(await self._call(sql, args, run_id, events, fence.owner))

    async def _call(
        self,
        sql: str,
        args: tuple[Any, ...],
        run_id: str,
        events: Sequence[StoredEvent] = (),
        owner: str = "",
        *,
        row: bool = False,
    ) -> Any:
        """One round trip that writes (a value back, or a row); a refusal the database
        raises becomes the store's error."""
        import asyncpg

        try:
            if row:
                return await self._pool.fetchrow(sql, *args)
            return await self._pool.fetchval(sql, *args)
        except asyncpg.PostgresError as exc:
            code, message = getattr(exc, "sqlstate", ""), str(getattr(exc, "message", exc))
            if code == "RT001":
                until = float(getattr(exc, "detail", None) or 0.0)
                raise LeaseHeld(run_id, message, until) from exc
            if code == "RT003":
                raise LeaseLost(run_id, owner) from exc
            if code in ("RT002", "23505"):
                raise SeqConflict(run_id, events[0].seq if events else -1, message) from exc
            raise StoreError(f"PostgreSQL refused a write to run {run_id!r}: {exc}") from exc

    async def read(self, run_id: str, after: int = -1) -> list[StoredEvent]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM router_events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
            run_id,
            after,
        )
        return [StoredEvent(*row) for row in rows]

    async def runs(self) -> list[RunSummary]:
        rows = await self._pool.fetch(
            "SELECT e.run_id, count(*), (array_agg(e.kind ORDER BY e.seq DESC))[1], "
            "coalesce(min(l.status), 'active') FROM router_events e "
            "LEFT JOIN router_leases l ON l.run_id = e.run_id "
            "GROUP BY e.run_id ORDER BY min(e.id)"
        )
        return [RunSummary(row[0], row[1], row[2], row[3]) for row in rows]

    async def scan(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, StoredEvent]]:
        rows = await self._pool.fetch(
            f"SELECT id, {_COLUMNS} FROM router_events WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [(row[0], StoredEvent(*row[1:])) for row in rows]

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> Lease:
        token, until = await self._call(
            "SELECT t, extract(epoch FROM clock_timestamp())::float8 + $3 "
            "FROM router_take($1, $2, $3) AS t",
            (run_id, owner, ttl_s),
            run_id,
            row=True,
        )
        return Lease(run_id, owner, until, token)

    async def renew_leases(self, leases: Sequence[Lease], ttl_s: float) -> list[Lease]:
        if not leases:
            return []
        renewed = await self._pool.fetch(
            "UPDATE router_leases l SET expires_at = clock_timestamp() + make_interval(secs => $4) "
            "FROM unnest($1::text[], $2::text[], $3::bigint[]) AS h(run_id, owner, token) "
            "WHERE l.run_id = h.run_id AND l.owner = h.owner AND l.token = h.token "
            "RETURNING l.run_id, l.token",
            [x.run_id for x in leases],
            [x.owner for x in leases],
            [x.token for x in leases],
            ttl_s,
        )
        kept = {(row[0], row[1]) for row in renewed}
        return [x for x in leases if (x.run_id, x.token) not in kept]

    async def release_lease(
        self, run_id: str, owner: str, token: int = 0, status: str = ""
    ) -> None:
        if not owner:
            return
        await self._pool.execute(
            "WITH released AS (UPDATE router_leases SET owner = '', expires_at = 'epoch', "
            "status = CASE WHEN $4::text = '' THEN status ELSE $4::text END "
            "WHERE run_id = $1 AND owner = $2 AND $3::bigint IN (0, token) RETURNING status) "
            "SELECT pg_notify('router_runs', $1) FROM released WHERE status = 'active'",
            run_id,
            owner,
            token,
            status,
        )

    async def break_lease(self, run_id: str) -> None:
        await self._pool.execute(
            "UPDATE router_leases SET owner = '', expires_at = 'epoch', token = token + 1 "
            "WHERE run_id = $1",
            run_id,
        )

    async def claim(self, owner: str, ttl_s: float, limit: int) -> list[Lease]:
        rows = await self._pool.fetch("SELECT * FROM router_claim($1, $2, $3)", owner, ttl_s, limit)
        return [Lease(row[0], owner, row[2], row[1]) for row in rows]

    async def listen(self, callback: Callable[[str], None]) -> Callable[[], Awaitable[None]]:
        """Call ``callback(run_id)`` whenever a run becomes active again (a decision was
        recorded, or its driver gave it back unfinished), by LISTEN/NOTIFY. Returns the
        coroutine function that stops listening."""
        conn = await self._pool.acquire()

        def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        await conn.add_listener("router_runs", notified)

        async def stop() -> None:
            try:
                await conn.remove_listener("router_runs", notified)
            finally:
                await self._pool.release(conn)

        return stop

    async def aclose(self) -> None:
        await self._pool.close()


async def _session_is_clean(_conn: Any) -> None:
    """The pool's reset of a connection handed back: nothing to do, so no round trip. asyncpg
    still rolls back an open transaction and drops listeners itself; the store leaves no
    other session state behind (its advisory lock is released where it is taken, its LISTEN
    undone by ``listen``'s stop). The default reset would cost every call a second round trip.
    """


@final
class PoolOpening(Generic[T]):
    """``await`` or ``async with`` it: a pool on ``dsn``, the ``schema`` set up (one process
    at a time, under an advisory lock), and what ``build`` makes of the pool. Raises
    StoreError without asyncpg or a server."""

    def __init__(
        self,
        dsn: str,
        min_size: int,
        max_size: int,
        schema: str | None,
        build: Callable[[Any], T],
        *,
        read_only: bool = False,
    ) -> None:
        self._dsn, self._min, self._max = dsn, min_size, max_size
        self._schema, self._build, self._read_only = schema, build, read_only
        self._made: T | None = None

    def __await__(self) -> Any:
        return self._open().__await__()

    async def _open(self) -> T:
        try:
            import asyncpg
        except ImportError as exc:
            raise StoreError(
                'router on PostgreSQL needs asyncpg: pip install "router[postgres]"'
            ) from exc
        try:
            settings = {"default_transaction_read_only": "on"} if self._read_only else None
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min,
                max_size=self._max,
                reset=_session_is_clean,
                server_settings=settings,
            )
            async with pool.acquire() as conn:
                if self._schema is None:  # nothing created: there must be a log already
                    has_log = await conn.fetchval("SELECT to_regclass('router_events')") is not None
                else:
                    await conn.execute("SELECT pg_advisory_lock(7294001)")  # one setup at a time
                    try:
                        await conn.execute(self._schema)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock(7294001)")
                    has_log = True
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot open PostgreSQL at {_where(self._dsn)}: {exc}") from exc
        if not has_log:  # after the connection is back: closing waits for every one
            await pool.close()
            raise NotALog(_where(self._dsn), "it has no router_events table")
        self._made = self._build(pool)
        return self._made

    async def __aenter__(self) -> T:
        return await self._open()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._made is not None:
            await self._made.aclose()  # type: ignore[attr-defined]


def _where(dsn: str) -> str:
    """The server and database of a URL, without its password."""
    return dsn.rsplit("@", 1)[-1]
