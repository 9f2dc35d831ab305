"""Reading a run's log back, and forking it: the operations on stored runs that need no
model and no tools.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from .chain import Chain, verify
from .clock import Clock, RandomIds, SystemClock
from .errors import ConfigError, KeyMissing, RunNotFound, StoreError
from .events import Event, RunForked, StoredEvent, decode_event, decode_events, encode_event
from .fsm import RunState, fold
from .protocols import Cipher, Store

__all__ = ["decode_run", "decode_stored", "fork_run", "load_run", "sealer"]


def decode_stored(stored: StoredEvent, cipher: Cipher | None = None) -> Any:
    """The event a stored payload holds, opened with ``cipher`` if it is encrypted."""
    payload = stored.payload
    if payload[:1] != b"{":
        if cipher is None:
            raise KeyMissing(payload[2 : 2 + payload[1]].decode(errors="replace") if len(payload) > 1 else "?")
        payload = cipher.open(payload)
    try:
        return decode_event(payload)
    except msgspec.DecodeError as exc:
        raise StoreError(f"run {stored.run_id!r}: event {stored.seq} is not an event this router knows: {exc}") from exc


def decode_run(stored: Sequence[StoredEvent], cipher: Cipher | None = None) -> list[Any]:
    """The events of stored payloads, in order: in one decode when every payload is plain
    JSON, else one by one (which also names the first payload that is not an event)."""
    payloads = [s.payload for s in stored]
    if all(p[:1] == b"{" for p in payloads):
        try:
            return decode_events(payloads)
        except msgspec.DecodeError:
            pass  # find and name the bad payload below
    return [decode_stored(s, cipher) for s in stored]


async def load_run(store: Store, run_id: str, cipher: Cipher | None = None) -> tuple[list[Any], RunState, Chain]:
    """Read, verify and fold a run's log: its events, state and chain head.

    cipher: opens encrypted payloads (the chain is verified on the stored bytes either way).
    """
    stored = await store.read(run_id)
    if not stored:
        raise RunNotFound(run_id)
    verify(stored)
    events = decode_run(stored, cipher)
    return events, fold(events), Chain.after(run_id, stored)


async def fork_run(
    store: Store,
    run_id: str,
    at_seq: int,
    *,
    new_run_id: str | None = None,
    then: Sequence[Event] = (),
    note: str = "",
    clock: Clock | None = None,
    cipher: Cipher | None = None,
) -> RunState:
    """Fork a run at ``at_seq`` into a new run: the parent's events 0 .. at_seq - 1, then a
    ``run_forked`` event naming the parent and the fork point, then ``then`` (for example a
    reviewer's edit of the model turn that was at ``at_seq``). Returns the fork's state;
    ``Engine.resume`` continues it. The parent is not touched.

    Raises ConfigError if the fork point is outside the run or ``then`` does not fit there.
    """
    clock = clock or SystemClock()
    events, _, _ = await load_run(store, run_id, cipher)
    if not 1 <= at_seq <= len(events):
        raise ConfigError(f"run {run_id!r} has events 0..{len(events) - 1}; fork at 1..{len(events)}")
    parent = await store.read(run_id, after=at_seq - 2)
    new_run_id = new_run_id or RandomIds().new_id("run")
    if await store.read(new_run_id):
        raise ConfigError(f"run {new_run_id!r} already exists")
    forked = RunForked(at=clock.now_us(), parent_run_id=run_id, parent_seq=at_seq,
                       parent_hash=parent[0].hash.hex(), note=note)
    batch = [*events[:at_seq], forked, *then]
    state = fold(batch)
    if state.fault:
        raise ConfigError(f"the fork does not fit at seq {at_seq}: {state.fault}")
    chain = Chain(new_run_id)
    await store.append(chain.seal(batch, sealer(cipher)))
    return state


def sealer(cipher: Cipher | None) -> Callable[[Event], bytes]:
    """Plain canonical bytes, or encrypted ones when the log is encrypted."""
    if cipher is None:
        return encode_event
    return lambda event: cipher.seal(encode_event(event))
