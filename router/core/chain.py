"""The per-run sha256 hash chain over canonical event bytes.

``hash[n] = sha256(prev_hash[n] || run_id || 0x00 || seq (8 bytes, big endian) || payload)``
with ``prev_hash[0]`` = 32 zero bytes and ``prev_hash[n] = hash[n-1]``. An auditor can
recompute it from an export alone: editing, removing, reordering or inserting any event
breaks the link at (or right after) that event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from hashlib import sha256

from ..errors import ChainBroken
from .events import KINDS, Event, StoredEvent, encode_event

__all__ = ["GENESIS", "Chain", "link", "verify"]

GENESIS = bytes(32)


def link(run_id: str, seq: int, payload: bytes, prev_hash: bytes) -> bytes:
    """The hash of one event, given the hash before it."""
    return sha256(
        b"".join((prev_hash, run_id.encode(), b"\x00", seq.to_bytes(8, "big"), payload))
    ).digest()


class Chain:
    """The head of one run's chain: turns events into stored, linked events."""

    __slots__ = ("run_id", "next_seq", "head", "_prefix")

    def __init__(self, run_id: str, next_seq: int = 0, head: bytes = GENESIS) -> None:
        self.run_id = run_id
        self.next_seq = next_seq
        self.head = head
        self._prefix = run_id.encode() + b"\x00"  # what every link hashes after prev_hash

    @classmethod
    def after(cls, run_id: str, stored: Sequence[StoredEvent]) -> Chain:
        if not stored:
            return cls(run_id)
        last = stored[-1]
        return cls(run_id, last.seq + 1, last.hash)

    def seal(
        self, events: Iterable[Event], encode: Callable[[Event], bytes] = encode_event
    ) -> list[StoredEvent]:
        """Link events onto the chain. The head moves only when the caller commits.

        encode: how an event becomes its stored payload (canonical bytes, possibly redacted
        or encrypted); the hash covers exactly those bytes.
        """
        out: list[StoredEvent] = []
        seq, head, run_id, prefix = self.next_seq, self.head, self.run_id, self._prefix
        kinds, join, stored = KINDS, b"".join, StoredEvent
        for event in events:
            payload = encode(event)
            digest = sha256(join((head, prefix, seq.to_bytes(8, "big"), payload))).digest()
            out.append(stored(run_id, seq, kinds[type(event)], payload, head, digest))
            seq, head = seq + 1, digest
        return out

    def advance(self, stored: Sequence[StoredEvent]) -> None:
        if stored:
            self.next_seq = stored[-1].seq + 1
            self.head = stored[-1].hash


def verify(stored: Iterable[StoredEvent], head: bytes | None = None) -> int:
    """Check one run's events, in seq order, against the chain.

    A chain alone cannot show that its tail was cut off; pass ``head``, the last hash
    seen earlier (for example at the previous export), to check that too.
    Returns the number of events checked. Raises ChainBroken naming the first bad link.
    """
    expected_seq, last, run_id = 0, GENESIS, None
    for event in stored:
        run_id = event.run_id if run_id is None else run_id
        if event.run_id != run_id:
            raise ChainBroken(
                event.run_id, event.seq, f"event of another run inside run {run_id!r}"
            )
        if event.seq != expected_seq:
            raise ChainBroken(
                run_id, expected_seq, f"expected seq {expected_seq}, found {event.seq}"
            )
        if event.prev_hash != last:
            raise ChainBroken(
                run_id, event.seq, "prev_hash does not match the previous event's hash"
            )
        if link(run_id, event.seq, event.payload, last) != event.hash:
            raise ChainBroken(run_id, event.seq, "hash does not match the event's payload")
        expected_seq, last = expected_seq + 1, event.hash
    if head is not None and head != last:
        raise ChainBroken(
            run_id or "?",
            expected_seq,
            "the chain does not end at the expected head: events were removed",
        )
    return expected_seq
