"""Stored payloads back to events: opened with the cipher when sealed, decoded in one call
when every payload is plain. The envelope of a sealed payload is defined here, so that
readers and ciphers agree on it. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ..errors import KeyMissing, StoreError
from .events import StoredEvent, decode_event, decode_events
from .protocols import Cipher

__all__ = ["decode_plaintext", "decode_run", "decode_stored", "is_sealed", "key_id_of"]

SEALED = b"\x01"  # a sealed payload: 0x01 | len(key id) | key id | the cipher's bytes


def is_sealed(payload: bytes) -> bool:
    """Whether a stored payload was sealed by a cipher (else it is canonical JSON)."""
    return payload[:1] == SEALED


def key_id_of(payload: bytes) -> str:
    """The id of the key a sealed payload was sealed with ("?" if it cannot be read)."""
    return payload[2 : 2 + payload[1]].decode(errors="replace") if len(payload) > 1 else "?"


def decode_stored(stored: StoredEvent, cipher: Cipher | None = None) -> Any:
    """The event a stored payload holds, opened with ``cipher`` if it is encrypted."""
    payload = stored.payload
    if payload[:1] != b"{":
        if cipher is None:
            raise KeyMissing(key_id_of(payload))
        payload = cipher.open(payload)
    return decode_plaintext(stored, payload)


def decode_plaintext(stored: StoredEvent, plaintext: bytes) -> Any:
    """The event a stored event's plaintext (its payload, opened if it was sealed) holds.
    Raises StoreError naming the event if it is not one this router knows."""
    try:
        return decode_event(plaintext)
    except msgspec.DecodeError as exc:
        raise StoreError(
            f"run {stored.run_id!r}: event {stored.seq} is not an event this router knows: {exc}"
        ) from exc


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
