"""The one writer of a run's log.

Every event that reaches a store goes through a RunLog: sealed (redaction first, then
encryption), linked onto the run's hash chain, appended in one batch that carries the
writer's fencing token (and takes or releases the lease in the same transaction), and what
was stored handed to the observers (the redacted form). The runtime's lease keeper renews
the leases of the logs that hold one. Agent and graph engines, reviews and
decisions, forks and the end of a child run all write through it; nothing else calls
``Store.append``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, final

import anyio
import msgspec

from ..core.chain import Chain, verify
from ..core.events import Event, GraphStarted, RunCancelled, RunStarted, decode_event, encode_event
from ..core.fsm import RunState, fold
from ..core.graph_fsm import GraphState, fold_graph
from ..core.protocols import Cipher, Fence, Lease, Store
from ..core.redaction import Redaction
from ..core.stored import decode_run
from ..errors import ConfigError, LeaseLost, RunNotFound
from .runtime import Runtime

__all__ = [
    "WAITING",
    "RunLog",
    "end_run",
    "fold_run",
    "load_any_run",
    "load_run",
    "open_log",
    "plaintext_of",
    "recorded_redaction",
    "status_of",
]

_log = logging.getLogger("router.lease")
# The phases in which a run, of either kind, waits for a person's decision.
WAITING = frozenset({"interrupted", "awaiting_review"})


def status_of(state: RunState | GraphState) -> str:
    """A run's status for workers: "ended", "waiting" for a person, or "active"."""
    if state.terminal:
        return "ended"
    return "waiting" if state.phase in WAITING else "active"


@final
class RunLog:
    """The head of one run's log in this process: its chain, its unsaved events and the
    lease this process holds on it, if any (the first batch of a log that holds none takes
    it). Every batch carries the lease's fencing token: once another owner has taken the
    run over, nothing more this writer appends lands (LeaseLost)."""

    __slots__ = (
        "runtime",
        "run_id",
        "chain",
        "pending",
        "redaction",
        "encode",
        "lease",
        "lost",
        "handed_over",
        "_fence",
    )

    def __init__(
        self,
        runtime: Runtime,
        run_id: str,
        redaction: Redaction,
        chain: Chain | None = None,
        *,
        lease: Lease | None = None,
    ) -> None:
        self.runtime = runtime
        self.run_id = run_id
        self.chain = chain or Chain(run_id)
        self.pending: list[Event] = []
        self.redaction = redaction
        self.encode = _sealer(redaction, runtime)
        self.lease: Lease | None = None  # the lease this process holds, None if none
        self.lost = False  # the lease was taken over: nothing more is written
        self.handed_over = False  # a cancellation gives the run back unfinished, not ended
        self._fence = Fence(runtime.owner, 0, runtime.lease_ttl_s)  # 0: takes it
        if lease is not None:
            self._hold(lease.token, lease)

    @property
    def held(self) -> bool:
        return self.lease is not None

    def add(self, event: Event) -> None:
        self.pending.append(event)

    async def flush(self, *, last: bool = False, status: str = "active") -> None:
        """Commit the pending events with the run's lease: taken with a first batch (if
        this process does not hold it), checked with every batch (its token), released
        with the last (``last``), which leaves the run in ``status`` for workers (see
        ``status_of``)."""
        pending = self.pending
        if not pending:
            if last:
                await self.release(status)
            return
        if self.lost:
            raise LeaseLost(self.run_id, self.runtime.owner)
        fence = self._fence
        if last:
            fence = Fence(fence.owner, fence.token, fence.ttl_s, True, status)
        sealed = self.chain.seal(pending, self.encode)
        try:
            token = await self.runtime.store.append(sealed, fence=fence)
        except LeaseLost:
            self.lose()
            raise
        if last:
            self._unhold()
        elif not fence.token:
            self._hold(token)
        self.chain.advance(sealed)
        if self.runtime.observers:
            self._notify(pending)
        pending.clear()  # the same list: a run's driver holds it

    async def close(self, state: RunState | GraphState) -> None:
        """The run's driver stops: flush what is pending and give the lease back, leaving
        the run in the status its state says."""
        await self.flush(last=True, status=status_of(state))

    async def release(self, status: str = "") -> None:
        """Give up the lease if this process holds it (shielded: it runs on the way out),
        leaving the run in ``status`` ("" as it is)."""
        lease = self.lease
        if lease is not None and not self.lost:
            self._unhold()
            with anyio.CancelScope(shield=True):
                await self.runtime.store.release_lease(
                    self.run_id, lease.owner, lease.token, status
                )

    def lose(self) -> None:
        """Another owner took the run over: the driver's next batch is refused at once
        (LeaseLost), before any round trip, and the run stops there."""
        if not self.lost:
            _log.warning(
                "run %s: another owner took it over; this process writes no more", self.run_id
            )
        self.lost = True
        self.runtime.keeper.drop(self)

    def _hold(self, token: int, lease: Lease | None = None) -> None:
        runtime = self.runtime
        self.lease = lease or Lease(self.run_id, runtime.owner, 0.0, token)
        self._fence = Fence(runtime.owner, token, runtime.lease_ttl_s)
        runtime.keeper.hold(self)

    def _unhold(self) -> None:
        runtime = self.runtime
        self.lease = None
        self._fence = Fence(runtime.owner, 0, runtime.lease_ttl_s)
        runtime.keeper.drop(self)

    def _notify(self, events: Sequence[Event]) -> None:
        shown: Sequence[Event] = list(events)  # observers may keep it
        if self.redaction:  # observers see what was stored, never the secret
            shown = [decode_event(self.redaction.apply(encode_event(e))) for e in events]
        for observer in self.runtime.observers:
            observer.committed(self.run_id, shown)


def plaintext_of(redaction: Redaction) -> Callable[[Event], bytes]:
    """An event's stored form before any encryption: canonical bytes, redacted (what a
    replay compares, since encryption is randomized)."""
    if redaction:
        return lambda event: redaction.apply(encode_event(event))
    return encode_event


def _sealer(redaction: Redaction, runtime: Runtime) -> Callable[[Event], bytes]:
    """What an event becomes before it is hashed: redacted, then encrypted."""
    cipher = runtime.cipher
    if redaction:
        if cipher is None:
            return lambda event: redaction.apply(encode_event(event))
        return lambda event: cipher.seal(redaction.apply(encode_event(event)))
    if cipher is None:
        return encode_event
    return lambda event: cipher.seal(encode_event(event))


def recorded_redaction(events: Sequence[Any]) -> Redaction:
    """The redaction policy a run recorded in its first event."""
    first = events[0] if events else None
    if isinstance(first, RunStarted | GraphStarted):
        return Redaction.recorded(msgspec.structs.asdict(first.redaction))
    return Redaction()


async def _read(store: Store, run_id: str, cipher: Cipher | None) -> tuple[list[Any], Chain]:
    """A run's events, read, verified and decoded, and its chain head."""
    stored = await store.read(run_id)
    if not stored:
        raise RunNotFound(run_id)
    verify(stored)
    return decode_run(stored, cipher), Chain.after(run_id, stored)


async def open_log(
    runtime: Runtime,
    run_id: str,
    redaction: Redaction | None = None,
    *,
    lease: bool = True,
    kind: type[RunStarted] | type[GraphStarted] | None = None,
) -> tuple[list[Any], RunLog]:
    """Take the run's lease (unless ``lease`` is False), read, verify and decode its log.
    Returns its events and its writer, which seals with the recorded policy (and
    ``redaction`` too). The lease is given back if reading fails.

    kind: the first event the run must have (``RunStarted`` for an agent's engine,
    ``GraphStarted`` for a graph's), else ConfigError names what it is.
    Raises RunNotFound, ChainBroken, KeyMissing, LeaseHeld, ConfigError."""
    store = runtime.store
    held = await store.acquire_lease(run_id, runtime.owner, runtime.lease_ttl_s) if lease else None
    try:
        events, chain = await _read(store, run_id, runtime.cipher)
        if kind is not None and not isinstance(events[0], kind):
            what = (
                "an agent run: use the Engine of its agent"
                if isinstance(events[0], RunStarted)
                else ("a graph run: use the GraphEngine of its graph")
            )
            raise ConfigError(f"run {run_id!r} is {what}")
    except BaseException:
        if held is not None:
            with anyio.CancelScope(shield=True):
                await store.release_lease(run_id, held.owner, held.token)
        raise
    policy = recorded_redaction(events)
    writer = policy | redaction if redaction else policy
    return events, RunLog(runtime, run_id, writer, chain, lease=held)


async def load_run(
    store: Store, run_id: str, cipher: Cipher | None = None
) -> tuple[list[Any], RunState, Chain]:
    """Read, verify and fold an agent run's log: its events, state and chain head. Reads
    only: it takes no lease and writes nothing.

    cipher: opens encrypted payloads (the chain is verified on the stored bytes either way).
    Raises RunNotFound, ChainBroken, KeyMissing."""
    events, chain = await _read(store, run_id, cipher)
    return events, fold(events), chain


async def load_any_run(
    store: Store, run_id: str, cipher: Cipher | None = None
) -> tuple[list[Any], RunState | GraphState]:
    """Read, verify and fold a run of either kind (see ``fold_run``): its events and
    state. Reads only. Raises RunNotFound, ChainBroken, KeyMissing."""
    events, _ = await _read(store, run_id, cipher)
    return events, fold_run(events)


def fold_run(events: Sequence[Any]) -> RunState | GraphState:
    """The state of a run of either kind: a graph run's (merged without its reducers) or an
    agent run's."""
    return (
        fold_graph(None, events) if events and isinstance(events[0], GraphStarted) else fold(events)
    )


async def end_run(runtime: Runtime, run_id: str, reason: str) -> None:
    """Record that a run that stopped to wait (a child whose parent went on without it)
    ends: ``run_cancelled``, unless it has ended already."""
    events, log = await open_log(runtime, run_id)
    try:
        if not fold_run(events).terminal:
            log.add(RunCancelled(at=runtime.clock.now_us(), reason=reason))
        await log.flush(last=True, status="ended")
    finally:
        await log.release()
