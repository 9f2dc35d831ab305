"""Workers: processes that find the runs nobody is advancing and advance them.

A run's driver holds its lease and its runtime's keeper renews it; when the process dies,
the lease lapses. A Worker claims such runs (SKIP LOCKED on PostgreSQL, so that many
workers never claim the same run), reads which agent or graph each one's first event
names, and resumes it with the definition the application registered under that name.
Runs that wait for a person are left alone until a decision makes them active again (on
PostgreSQL a decision wakes the workers at once, by LISTEN/NOTIFY). A run that fails to
resume again and again is parked with the reason, in its log, rather than retried forever.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, final

import anyio

from ..core.events import GraphStarted, RunParked, RunStarted
from ..core.protocols import Lease
from ..core.stored import decode_run
from ..errors import ConfigError, LeaseHeld, LeaseLost
from .children import Child
from .log import open_log
from .runtime import Runtime

__all__ = ["Worker"]

log = logging.getLogger("router.worker")


def _name_of(definition: Any) -> tuple[str, str]:
    """The kind of run and the name a definition's runs record in their first event."""
    graph = getattr(definition, "graph", None)
    if graph is not None and hasattr(graph, "name"):
        return "graph", str(graph.name)
    agent = getattr(definition, "agent", None)
    if isinstance(agent, str):
        if not agent:
            raise ConfigError("a worker's agent must have a name: Engine(..., agent='name')")
        return "agent", agent
    raise ConfigError(f"a worker resumes Engines and GraphEngines, not {type(definition).__name__}")


@final
class Worker:
    """Claims the unfinished runs whose lease has lapsed, on ``runtime``'s store, and
    resumes them with ``definitions`` (Engines and GraphEngines, by their names).

    runtime: the worker's own (its owner names this worker in leases; its lease_ttl_s is how
    long a dead worker's runs wait). concurrency: runs advanced at once. poll_s: how often
    it looks for runs to claim when nothing wakes it. park_after: failed resumes of one run
    before it is parked. grace_s: on shutdown, how long runs in flight may take to finish
    before they are handed back unfinished (their leases released, for other workers).
    """

    def __init__(
        self,
        runtime: Runtime,
        definitions: Iterable[Child],
        *,
        concurrency: int = 16,
        poll_s: float = 1.0,
        park_after: int = 3,
        grace_s: float = 5.0,
    ) -> None:
        if concurrency < 1 or poll_s <= 0 or park_after < 1 or grace_s < 0:
            raise ConfigError(
                "a worker needs concurrency >= 1, poll_s > 0, park_after >= 1, grace_s >= 0"
            )
        self.runtime = runtime
        self._definitions: dict[tuple[str, str], Any] = {}
        for definition in definitions:
            key = _name_of(definition)
            if key in self._definitions:
                raise ConfigError(f"two definitions for the {key[0]} {key[1]!r}")
            self._definitions[key] = definition.on(runtime)
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.park_after = park_after
        self.grace_s = grace_s
        self.running: set[str] = set()
        self.failures: dict[str, int] = {}
        self.resumed = 0  # runs this worker drove until they stopped (ended or waiting)
        self.parked = 0
        self.lost = 0  # runs another process took over while this worker advanced them
        self._wake = anyio.Event()
        self._stopping = False

    def stop(self) -> None:
        """Stop claiming; runs in flight get ``grace_s`` to finish, then are handed back."""
        self._stopping = True
        self._wake.set()

    async def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        """Claim and advance runs until ``stop`` or a cancellation; either way, the runs
        still in flight are handed back unfinished (not ended) for other workers."""
        stop_listening = await self._listen()
        try:
            async with anyio.create_task_group() as runs:
                try:
                    await self._claim_until_stopped(runs, ready)
                    with anyio.move_on_after(self.grace_s):
                        while self.running:
                            await self._wait()
                finally:
                    self.runtime.keeper.hand_over()
                    runs.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await stop_listening()

    async def _claim_until_stopped(
        self, runs: anyio.abc.TaskGroup, ready: Callable[[], None] | None
    ) -> None:
        while not self._stopping:
            claimed = await self.claim(runs)
            if ready is not None:
                ready()
                ready = None
            if claimed < self.concurrency - len(self.running) or not claimed:
                with anyio.move_on_after(self.poll_s):
                    await self._wait()

    async def claim(self, runs: anyio.abc.TaskGroup) -> int:
        """Claim as many runs as there are free slots and start advancing them."""
        free = self.concurrency - len(self.running)
        if free <= 0:
            return 0
        leases = await self.runtime.store.claim(self.runtime.owner, self.runtime.lease_ttl_s, free)
        for lease in leases:
            self.running.add(lease.run_id)
            runs.start_soon(self._advance, lease)
        return len(leases)

    async def _wait(self) -> None:
        await self._wake.wait()
        self._wake = anyio.Event()

    async def _listen(self) -> Callable[[], Awaitable[None]]:
        listen = getattr(self.runtime.store, "listen", None)
        if listen is None:

            async def nothing() -> None:
                return None

            return nothing
        return await listen(lambda run_id: self._wake.set())  # type: ignore[no-any-return]

    async def _advance(self, lease: Lease) -> None:
        run_id = lease.run_id
        try:
            await self._resume(lease)
        except LeaseLost:
            self.lost += 1  # another process advances it now; nothing more was written
            log.info("run %s: its lease was taken over; this worker stopped advancing it", run_id)
        except LeaseHeld:
            pass  # another process advances it now
        except Exception as exc:
            await self._failed(run_id, exc)
        else:
            self.failures.pop(run_id, None)
        finally:
            self.running.discard(run_id)
            self._wake.set()

    async def _resume(self, lease: Lease) -> None:
        store, run_id = self.runtime.store, lease.run_id
        stored = await store.read(run_id, -1)
        first = decode_run(stored[:1], self.runtime.cipher)[0] if stored else None
        if not isinstance(first, RunStarted | GraphStarted):
            raise ConfigError(f"run {run_id!r} has no first event a worker can resume")
        if first.parent_run_id:  # a child run: its parent's driver resumes it
            await store.release_lease(run_id, lease.owner, lease.token, "child")
            return
        key = ("agent", first.agent) if isinstance(first, RunStarted) else ("graph", first.graph)
        definition = self._definitions.get(key)
        if definition is None:
            raise ConfigError(f"no definition registered for the {key[0]} {key[1]!r}")
        await definition.resume(run_id)
        self.resumed += 1

    async def _failed(self, run_id: str, exc: Exception) -> None:
        """Count a failed resume; park the run after ``park_after`` of them, else leave its
        lease to lapse (so that the next try comes a lease's time later)."""
        reason = f"{type(exc).__name__}: {exc}"
        count = self.failures[run_id] = self.failures.get(run_id, 0) + 1
        log.warning("run %s failed to resume (%d): %s", run_id, count, reason)
        with anyio.CancelScope(shield=True):
            try:
                if count >= self.park_after:
                    await self._park(run_id, reason, count)
                else:
                    await self.runtime.store.acquire_lease(
                        run_id, self.runtime.owner, self.runtime.lease_ttl_s
                    )
            except Exception as again:  # the store is down: the lease lapses by itself
                log.warning("run %s: could not hold it off: %s", run_id, again)

    async def _park(self, run_id: str, reason: str, attempts: int) -> None:
        runtime = self.runtime
        try:
            _, writer = await open_log(runtime, run_id)
        except LeaseHeld:
            return
        except Exception:  # an unreadable log: parked beside it, the reason in this log only
            lease = await runtime.store.acquire_lease(run_id, runtime.owner, runtime.lease_ttl_s)
            await runtime.store.release_lease(run_id, lease.owner, lease.token, "parked")
        else:
            writer.add(
                RunParked(
                    at=runtime.clock.now_us(), reason=reason, owner=runtime.owner, attempts=attempts
                )
            )
            await writer.flush(last=True, status="parked")
        self.parked += 1
        self.failures.pop(run_id, None)
        log.error("run %s parked after %d failed resumes: %s", run_id, attempts, reason)
