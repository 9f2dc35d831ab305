"""An in-memory store with the same contract as the SQLite store (tests, the bench)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import final

from ..core.chain import GENESIS
from ..core.events import StoredEvent
from ..core.protocols import Lease, LeaseChange, RunSummary
from ..errors import LeaseHeld, StoreError
from ..store import check_continues

__all__ = ["MemoryStore"]


@final
class MemoryStore:
    def __init__(self) -> None:
        self._runs: dict[str, list[StoredEvent]] = {}
        self._leases: dict[str, Lease] = {}
        self._all: list[StoredEvent] = []  # every event in append order; position + 1 is its id
        self._closed = False
        self.appends = 0  # append calls, for complexity checks

    async def append(
        self, events: Sequence[StoredEvent], *, lease: LeaseChange | None = None
    ) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        if not events:
            if lease is not None:
                raise StoreError(
                    "a lease change goes with events; use acquire_lease or release_lease alone"
                )
            return
        run_id = events[0].run_id
        if lease is not None and lease.ttl_s is not None:
            self._check_free(run_id, lease.owner)  # before anything changes: all or nothing
        log = self._runs.get(run_id)
        if log is None:
            check_continues(events, 0, GENESIS)
            self._runs[run_id] = log = []
        else:
            check_continues(events, len(log), log[-1].hash)
        log.extend(events)
        self._all.extend(events)
        self.appends += 1
        if lease is not None:
            if lease.ttl_s is None:
                await self.release_lease(run_id, lease.owner)
            else:
                await self.acquire_lease(run_id, lease.owner, lease.ttl_s)

    async def read(self, run_id: str, after: int = -1) -> list[StoredEvent]:
        self._check_open()
        return list(self._runs.get(run_id, ())[after + 1 :])

    async def runs(self) -> list[RunSummary]:
        self._check_open()
        return [RunSummary(run_id, len(log), log[-1].kind) for run_id, log in self._runs.items()]

    async def scan(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, StoredEvent]]:
        self._check_open()
        return [(after + 1 + i, e) for i, e in enumerate(self._all[after : after + limit])]

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> Lease:
        self._check_open()
        self._check_free(run_id, owner)
        lease = Lease(run_id, owner, time.time() + ttl_s)
        self._leases[run_id] = lease
        return lease

    def _check_free(self, run_id: str, owner: str) -> None:
        """Raise LeaseHeld if another owner holds the run's lease."""
        held = self._leases.get(run_id)
        if held is not None and held.owner != owner and held.expires_at > time.time():
            raise LeaseHeld(run_id, held.owner, held.expires_at)

    async def release_lease(self, run_id: str, owner: str) -> None:
        held = self._leases.get(run_id)
        if held is not None and held.owner == owner:
            del self._leases[run_id]

    async def break_lease(self, run_id: str) -> None:
        self._check_open()
        self._leases.pop(run_id, None)

    async def aclose(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")
