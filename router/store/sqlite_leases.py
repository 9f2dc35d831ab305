"""The SQLite store's leases: the statements that take, renew, release, break and claim a
run's lease, run inside the store's write transactions (on one connection, with the time
of the transaction)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..core.protocols import Fence, Lease
from ..errors import LeaseHeld, LeaseLost, StoreError

__all__ = [
    "apply_fence",
    "break_lease",
    "check_fence",
    "claim",
    "release",
    "renew",
    "take",
    "take_lease",
]

_TAKE = (
    "INSERT INTO leases (run_id, owner, expires_at, token) VALUES (?, ?, ?, 1) "
    "ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, "
    "expires_at = excluded.expires_at, token = leases.token + 1 "
    "WHERE leases.owner IN ('', excluded.owner) OR leases.expires_at <= ? "
    "RETURNING token"
)


def take(conn: sqlite3.Connection, run_id: str, owner: str, ttl_s: float, now: float) -> int:
    """Take the run's lease if it is free, lapsed or already ours: its new token, or 0."""
    row = conn.execute(_TAKE, (run_id, owner, now + ttl_s, now)).fetchone()
    return 0 if row is None else int(row[0])


def take_lease(
    conn: sqlite3.Connection, run_id: str, owner: str, ttl_s: float, now: float
) -> Lease | LeaseHeld:
    token = take(conn, run_id, owner, ttl_s, now)
    if token:
        return Lease(run_id, owner, now + ttl_s, token)
    held = conn.execute(
        "SELECT owner, expires_at FROM leases WHERE run_id = ?", (run_id,)
    ).fetchone()
    return LeaseHeld(run_id, held[0], held[1])


def check_fence(
    conn: sqlite3.Connection, run_id: str, fence: Fence | None, now: float
) -> tuple[StoreError | None, int]:
    """Whether a batch may be appended under ``fence``: (its error or None, the token the
    writer holds). A writer that holds the lease needs the run's token still; one that takes
    it takes it here (if it is free: the transaction is undone if the batch then fails); one
    with no fence needs nobody to hold it."""
    if fence is not None and fence.token:
        row = conn.execute("SELECT token FROM leases WHERE run_id = ?", (run_id,)).fetchone()
        ok = row is not None and row[0] == fence.token
        return (None if ok else LeaseLost(run_id, fence.owner)), fence.token
    if fence is not None:
        token = take(conn, run_id, fence.owner, fence.ttl_s, now)
        if token:
            return None, token
    held = conn.execute(
        "SELECT owner, expires_at FROM leases WHERE run_id = ? AND owner != '' AND expires_at > ?",
        (run_id, now),
    ).fetchone()
    return (LeaseHeld(run_id, held[0], held[1]) if held else None), 0


def apply_fence(conn: sqlite3.Connection, run_id: str, fence: Fence, token: int) -> int:
    """Release the lease if the (checked) fence says so; the token now held."""
    if fence.release:
        conn.execute(
            "UPDATE leases SET owner = '', expires_at = 0, status = ? WHERE run_id = ?",
            (fence.status, run_id),
        )
        return 0
    return token


def renew(
    conn: sqlite3.Connection, leases: Sequence[Lease], ttl_s: float, now: float
) -> list[Lease]:
    """Extend the leases still held; the ones lost."""
    return [
        lease
        for lease in leases
        if conn.execute(
            "UPDATE leases SET expires_at = ? WHERE run_id = ? AND owner = ? AND token = ?",
            (now + ttl_s, lease.run_id, lease.owner, lease.token),
        ).rowcount
        == 0
    ]


def release(conn: sqlite3.Connection, run_id: str, owner: str, token: int, status: str) -> None:
    conn.execute(
        "UPDATE leases SET owner = '', expires_at = 0, "
        "status = CASE WHEN ? = '' THEN status ELSE ? END "
        "WHERE run_id = ? AND owner = ? AND ? IN (0, token)",
        (status, status, run_id, owner, token),
    )


def break_lease(conn: sqlite3.Connection, run_id: str) -> None:
    conn.execute(
        "UPDATE leases SET owner = '', expires_at = 0, token = token + 1 WHERE run_id = ?",
        (run_id,),
    )


def claim(
    conn: sqlite3.Connection, owner: str, ttl_s: float, limit: int, now: float
) -> list[Lease]:
    """Take up to ``limit`` active runs whose leases lapsed, the longest lapsed first."""
    rows = conn.execute(
        "UPDATE leases SET owner = ?, expires_at = ?, token = token + 1 "
        "WHERE run_id IN (SELECT run_id FROM leases WHERE status = 'active' "
        "AND expires_at <= ? ORDER BY expires_at LIMIT ?) RETURNING run_id, token",
        (owner, now + ttl_s, now, limit),
    ).fetchall()
    return [Lease(run_id, owner, now + ttl_s, token) for run_id, token in rows]
