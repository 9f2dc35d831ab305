"""The keeper of a runtime's leases: while a run is being advanced in this process, its lease
is renewed every third of its time to live, on the event loop's clock (never a run's
injected clock), whether the run is appending, waiting for the model, running a long tool
or waiting for a child run. A lease found lost (another owner took the run over, or an
operator broke it) is marked on the run's writer: its driver's next batch is refused at
once, and the run stops there (the store would refuse it anyway: its token is stale).

One renewal is one transaction for all the runs this runtime holds. The keeper is a task
of its own, started when a first lease is held and ending once none has been for a round.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, final

from ..core.protocols import Lease, Store

__all__ = ["Held", "LeaseKeeper"]


class Held(Protocol):
    """A writer that holds a lease (a run's log)."""

    lease: Lease | None
    handed_over: bool

    def lose(self) -> None:
        """The lease is no longer this writer's."""
        ...


@final
class LeaseKeeper:
    __slots__ = ("store", "ttl_s", "_held", "_task", "renewals", "failures")

    def __init__(self, store: Store, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._held: dict[Held, None] = {}  # ordered, for renewals in a stable order
        self._task: asyncio.Task[None] | None = None
        self.renewals = 0  # renewal transactions, for tests and the bench
        self.failures = 0  # renewals the store refused (they are tried again next round)

    def hold(self, writer: Held) -> None:
        self._held[writer] = None
        task = self._task
        if task is None or task.done():
            # A task of its own: a run's driver must not wait for it, nor cancel it.
            self._task = asyncio.get_running_loop().create_task(self._keep())

    def drop(self, writer: Held) -> None:
        self._held.pop(writer, None)

    def hand_over(self) -> None:
        """Mark every run held now as handed over: when its driver is cancelled next (a
        worker shutting down), it gives the run back unfinished rather than ending it."""
        for writer in self._held:
            writer.handed_over = True

    async def _keep(self) -> None:
        try:
            while self._held:
                await asyncio.sleep(self.ttl_s / 3)
                await self.renew()
        except asyncio.CancelledError:  # the event loop is shutting down
            return

    async def renew(self) -> None:
        """Renew every lease held now; mark the writers whose lease is lost."""
        writers = [w for w in self._held if w.lease is not None]
        if not writers:
            return
        try:
            lost = await self.store.renew_leases([w.lease for w in writers], self.ttl_s)  # type: ignore[misc]
        except Exception:  # the store is unreachable: try again next round, the lease may lapse
            self.failures += 1
            return
        self.renewals += 1
        if lost:
            gone = {(x.run_id, x.token) for x in lost}
            for w in writers:
                lease = w.lease
                if lease is not None and (lease.run_id, lease.token) in gone:
                    self.drop(w)
                    w.lose()
