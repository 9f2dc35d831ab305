"""Stores: where runs' event logs live. Each implements ``router.core.protocols.Store``."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.events import StoredEvent
from ..core.protocols import Fence
from ..errors import SeqConflict, StoreError

__all__ = ["batch_run", "check_continues"]


def batch_run(events: Sequence[StoredEvent], fence: Fence | None) -> str:
    """The run an append's batch belongs to ("" for an empty batch, which appends nothing).
    Raises StoreError for a fence with no events, or a batch that mixes runs."""
    if not events:
        if fence is not None:
            raise StoreError("a fence goes with events; use the lease methods alone")
        return ""
    run_id = events[0].run_id
    for event in events:
        if event.run_id != run_id:
            raise StoreError("one append holds the events of one run")
    return run_id


def check_continues(events: Sequence[StoredEvent], next_seq: int, head: bytes) -> None:
    """Raise SeqConflict unless ``events`` (all of one run) continue a run whose chain is
    at (next_seq, head). Raise StoreError if they mix runs."""
    run_id = events[0].run_id if events else ""
    for event in events:
        if event.run_id != run_id:
            raise StoreError("one append holds the events of one run")
        if event.seq != next_seq:
            raise SeqConflict(event.run_id, event.seq, f"expected seq {next_seq}")
        if event.prev_hash != head:
            raise SeqConflict(
                event.run_id, event.seq, "prev_hash is not the hash of the previous event"
            )
        next_seq, head = next_seq + 1, event.hash
