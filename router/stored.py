"""Stored payloads back to events: opened with the cipher when sealed, decoded in one call
when every payload is plain. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from .errors import KeyMissing, StoreError
from .events import StoredEvent, decode_event, decode_events
from .protocols import Cipher

__all__ = ["decode_run", "decode_stored"]


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
