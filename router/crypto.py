"""Encryption at rest: AES-GCM over each stored payload, under keys the service supplies.

Install the extra: ``pip install "router[encryption]"`` (the cryptography package). The
hash chain covers the stored, encrypted bytes, so an auditor verifies integrity without
the key. A sealed payload is ``0x01 | len(key id) | key id | 12-byte nonce | ciphertext``:
the key id is recorded with every event, so keys rotate by adding a new active key and
keeping the old ones for reading.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, final

from .core.stored import SEALED, is_sealed, key_id_of
from .errors import ConfigError, KeyMissing

__all__ = ["AesGcmCipher", "is_sealed", "key_id_of"]

_MARK = SEALED
_AAD = b"router/1"


@final
class AesGcmCipher:
    """keys: key id -> 16, 24 or 32 random bytes. active: the id that seals new events."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:
            raise ConfigError(
                'encryption needs the extra: pip install "router[encryption]"'
            ) from exc
        if active not in keys:
            raise ConfigError(f"the active key {active!r} is not among the keys")
        self._aead: dict[str, Any] = {}
        for key_id, key in keys.items():
            if not key_id or len(key_id.encode()) > 255:
                raise ConfigError(f"key id {key_id!r} must be 1 to 255 bytes")
            if len(key) not in (16, 24, 32):
                raise ConfigError(f"key {key_id!r} must be 16, 24 or 32 bytes, not {len(key)}")
            self._aead[key_id] = AESGCM(key)
        self.active = active

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        key_id = self.active.encode()
        body = bytes(self._aead[self.active].encrypt(nonce, plaintext, _AAD))
        return _MARK + bytes([len(key_id)]) + key_id + nonce + body

    def open(self, stored: bytes) -> bytes:
        if not is_sealed(stored):
            return stored
        key_id = key_id_of(stored)
        aead = self._aead.get(key_id)
        if aead is None:
            raise KeyMissing(key_id)
        start = 2 + stored[1]
        nonce, body = stored[start : start + 12], stored[start + 12 :]
        try:
            return bytes(aead.decrypt(nonce, body, _AAD))
        except Exception as exc:  # cryptography's InvalidTag: wrong key or altered bytes
            raise ConfigError(
                f"cannot decrypt a payload sealed with key {key_id!r}: wrong key or altered bytes"
            ) from exc
