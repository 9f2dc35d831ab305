"""An in-memory store with the same contract as the SQLite store (tests, the bench)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import final

from ..core.chain import GENESIS
from ..core.events import StoredEvent
from ..core.protocols import Fence, Lease, RunSummary
from ..errors import LeaseHeld, LeaseLost, StoreError
from ..store import batch_run, check_continues

__all__ = ["MemoryStore"]


@final
class _Row:
    """A run's lease and status: who holds it until when, its fencing token."""

    __slots__ = ("owner", "expires_at", "token", "status")

    def __init__(self) -> None:
        self.owner = ""  # "" when nobody holds it
        self.expires_at = 0.0
        self.token = 0
        self.status = "active"

    def held_by_other(self, owner: str, now: float) -> bool:
        return self.owner != "" and self.owner != owner and self.expires_at > now


@final
class MemoryStore:
    def __init__(self) -> None:
        self._runs: dict[str, list[StoredEvent]] = {}
        self._rows: dict[str, _Row] = {}
        self._all: list[StoredEvent] = []  # every event in append order; position + 1 is its id
        self._closed = False
        self.appends = 0  # append calls, for complexity checks

    async def append(self, events: Sequence[StoredEvent], *, fence: Fence | None = None) -> int:
        if self._closed:
            raise StoreError("the store is closed")
        run_id = batch_run(events, fence)
        if not run_id:
            return 0
        row = self._rows.get(run_id)
        now = time.time()
        if fence is None:  # unfenced: refused while anyone holds the lease
            if row is not None and row.held_by_other("", now):
                raise LeaseHeld(run_id, row.owner, row.expires_at)
        elif fence.token == 0:
            if row is not None and row.held_by_other(fence.owner, now):
                raise LeaseHeld(run_id, row.owner, row.expires_at)
        elif row is None or row.token != fence.token:
            raise LeaseLost(run_id, fence.owner)
        log = self._runs.get(run_id)
        if log is None:
            check_continues(events, 0, GENESIS)
        else:
            check_continues(events, len(log), log[-1].hash)
        # Checked: from here nothing fails, so the batch and the lease change are one step.
        if log is None:
            self._runs[run_id] = log = []
        log.extend(events)
        self._all.extend(events)
        self.appends += 1
        if fence is None:
            return 0
        if row is None:
            self._rows[run_id] = row = _Row()
        if fence.token == 0:
            self._take(row, fence.owner, fence.ttl_s, now)
        if fence.release:
            row.owner, row.expires_at, row.status = "", 0.0, fence.status
            return 0
        return row.token

    @staticmethod
    def _take(row: _Row, owner: str, ttl_s: float, now: float) -> None:
        row.owner, row.expires_at, row.token = owner, now + ttl_s, row.token + 1

    async def read(self, run_id: str, after: int = -1) -> list[StoredEvent]:
        self._check_open()
        return list(self._runs.get(run_id, ())[after + 1 :])

    async def runs(self) -> list[RunSummary]:
        self._check_open()
        rows = self._rows
        return [
            RunSummary(
                run_id, len(log), log[-1].kind, rows[run_id].status if run_id in rows else "active"
            )
            for run_id, log in self._runs.items()
        ]

    async def scan(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, StoredEvent]]:
        self._check_open()
        return [(after + 1 + i, e) for i, e in enumerate(self._all[after : after + limit])]

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> Lease:
        self._check_open()
        now = time.time()
        row = self._rows.get(run_id)
        if row is None:
            self._rows[run_id] = row = _Row()
        elif row.held_by_other(owner, now):
            raise LeaseHeld(run_id, row.owner, row.expires_at)
        self._take(row, owner, ttl_s, now)
        return Lease(run_id, owner, row.expires_at, row.token)

    async def renew_leases(self, leases: Sequence[Lease], ttl_s: float) -> list[Lease]:
        self._check_open()
        lost: list[Lease] = []
        until = time.time() + ttl_s
        for lease in leases:
            row = self._rows.get(lease.run_id)
            if row is None or row.token != lease.token or row.owner != lease.owner:
                lost.append(lease)
            else:
                row.expires_at = until
        return lost

    async def release_lease(
        self, run_id: str, owner: str, token: int = 0, status: str = ""
    ) -> None:
        row = self._rows.get(run_id)
        if row is not None and row.owner == owner and owner and token in (0, row.token):
            row.owner, row.expires_at = "", 0.0
            if status:
                row.status = status

    async def break_lease(self, run_id: str) -> None:
        self._check_open()
        row = self._rows.get(run_id)
        if row is not None:
            row.owner, row.expires_at, row.token = "", 0.0, row.token + 1

    async def claim(self, owner: str, ttl_s: float, limit: int) -> list[Lease]:
        self._check_open()
        now, taken = time.time(), list[Lease]()
        for run_id, row in self._rows.items():
            if len(taken) >= limit:
                break
            if row.status == "active" and (row.owner == "" or row.expires_at <= now):
                self._take(row, owner, ttl_s, now)
                taken.append(Lease(run_id, owner, row.expires_at, row.token))
        return taken

    async def aclose(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")
