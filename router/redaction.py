"""Redaction: what must not be stored never reaches the disk. Pure.

A policy has named patterns (regular expressions replaced in every string an event holds:
messages, model text, tool arguments and results, errors) and field names (keys inside tool
arguments and results whose values are replaced whole). It applies to the stored copy of
each event, just before it is hashed and written: the live run acts on the real values,
and the log, its exports and a resumed run see ``[redacted:<name>]``. The run records the
policy (names only) in ``run_started``, and its definition hash covers the expressions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .errors import ConfigError

__all__ = ["Redaction"]

# Keys keep the order they were decoded in, so a redacted payload keeps the event's field
# order and decoding and re-encoding it gives the same bytes.
_encoder = msgspec.json.Encoder()
_EMBEDDED = frozenset({"arguments", "result"})  # event fields that hold JSON text


class Redaction:
    """patterns: name -> regular expression. fields: keys inside tool arguments and results."""

    __slots__ = ("_patterns", "_fields")

    def __init__(self, patterns: Mapping[str, str] | None = None, fields: Iterable[str] = ()) -> None:
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for name, expression in (patterns or {}).items():
            try:
                self._patterns.append((name, re.compile(expression)))
            except re.error as exc:
                raise ConfigError(f"redaction pattern {name!r} is not a regular expression: {exc}") from exc
        self._fields = frozenset(fields)

    def __bool__(self) -> bool:
        return bool(self._patterns or self._fields)

    def names(self) -> tuple[str, ...]:
        """What the policy redacts, as recorded in ``run_started``."""
        return tuple(sorted([f"pattern:{n}" for n, _ in self._patterns] + [f"field:{f}" for f in self._fields]))

    def describe(self) -> dict[str, Any]:
        return {"patterns": {n: p.pattern for n, p in self._patterns}, "fields": sorted(self._fields)}

    def apply(self, payload: bytes) -> bytes:
        """The payload with every match and every listed field replaced."""
        if not self:
            return payload
        return _encoder.encode(self._walk(msgspec.json.decode(payload), embedded=False))

    def _walk(self, value: Any, *, embedded: bool, key: str = "") -> Any:
        if isinstance(value, str):
            if key in _EMBEDDED and not embedded:
                return self._json_text(value)
            return self._text(value)
        if isinstance(value, dict):
            return {
                k: f"[redacted:{k}]" if embedded and k in self._fields else self._walk(v, embedded=embedded, key=k)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._walk(v, embedded=embedded) for v in value]
        return value

    def _json_text(self, text: str) -> str:
        try:
            inner = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return self._text(text)  # not JSON (a model's malformed arguments): treat as text
        return _encoder.encode(self._walk(inner, embedded=True)).decode()

    def _text(self, text: str) -> str:
        for name, pattern in self._patterns:
            text = pattern.sub(f"[redacted:{name}]", text)
        return text
