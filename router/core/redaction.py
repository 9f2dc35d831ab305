"""Redaction: what must not be stored never reaches the disk. Pure.

A policy has named patterns (regular expressions replaced in every string an event holds:
messages, model text, tool arguments and results, reviewers' edits, errors, graph state)
and field names (keys inside JSON values, matched case-insensitively, whose values are
replaced whole). It applies to the stored copy of each event, just before it is hashed and
written, by the run's one log writer: the live run acts on the real values, and the log,
its exports, its observers and a resumed run see ``[redacted:<name>]``. A run records its
policy in its first event, so that every later writer (a reviewer's decision, a fork, the
end of a child run) seals with it, and a child run inherits its parent's policy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ..errors import ConfigError

__all__ = ["Redaction"]

# Keys keep the order they were decoded in, so a redacted payload keeps the event's field
# order and decoding and re-encoding it gives the same bytes.
_encoder = msgspec.json.Encoder()
# Event fields that hold JSON text: tool arguments (a reviewer's edit too), results (a
# supplied one too), a graph's state, a node's update and a mapped task's item.
_EMBEDDED = frozenset({"arguments", "result", "state", "update", "item"})


class Redaction:
    """patterns: name -> regular expression. fields: keys inside JSON values (any case)."""

    __slots__ = ("_patterns", "_fields", "_field_words")

    def __init__(
        self, patterns: Mapping[str, str] | None = None, fields: Iterable[str] = ()
    ) -> None:
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for name, expression in sorted((patterns or {}).items()):
            try:
                self._patterns.append((name, re.compile(expression)))
            except re.error as exc:
                raise ConfigError(
                    f"redaction pattern {name!r} is not a regular expression: {exc}"
                ) from exc
        self._fields = frozenset(f.lower() for f in fields)
        # A field name, in any quoting, to find it in text that is not JSON (malformed arguments).
        self._field_words = (
            re.compile(
                "|".join(
                    rf"(?<![A-Za-z0-9_]){re.escape(f)}(?![A-Za-z0-9_])"
                    for f in sorted(self._fields)
                ),
                re.IGNORECASE,
            )
            if self._fields
            else None
        )

    def __bool__(self) -> bool:
        return bool(self._patterns or self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Redaction) and self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash((tuple(self._fields), tuple(p.pattern for _, p in self._patterns)))

    def __or__(self, other: Redaction) -> Redaction:
        """Both policies at once (a child run keeps its parent's secrets as well as its own).
        Raises ConfigError if they give one pattern name two expressions."""
        patterns = {n: p.pattern for n, p in self._patterns}
        for name, pattern in other._patterns:
            if patterns.setdefault(name, pattern.pattern) != pattern.pattern:
                raise ConfigError(f"redaction pattern {name!r} has two expressions")
        return Redaction(patterns, self._fields | other._fields)

    @classmethod
    def recorded(cls, policy: Mapping[str, Any] | None) -> Redaction:
        """The policy a run recorded (``describe``'s form)."""
        if not policy:
            return cls()
        return cls(policy.get("patterns") or {}, policy.get("fields") or ())

    def names(self) -> tuple[str, ...]:
        """What the policy redacts, by name."""
        return tuple(
            sorted(
                [f"pattern:{n}" for n, _ in self._patterns] + [f"field:{f}" for f in self._fields]
            )
        )

    def describe(self) -> dict[str, Any]:
        """The policy as plain data, as a run records it."""
        return {
            "patterns": {n: p.pattern for n, p in self._patterns},
            "fields": sorted(self._fields),
        }

    def apply(self, payload: bytes) -> bytes:
        """The payload with every match and every listed field replaced."""
        if not self:
            return payload
        return _encoder.encode(self._walk(msgspec.json.decode(payload), embedded=False))

    def _walk(self, value: Any, *, embedded: bool, key: str = "") -> Any:
        """An event's fields, and (``embedded``) the JSON values some of them hold: inside
        those, field names are matched, keys and numbers are searched too, and a string
        that is JSON text itself is opened."""
        if isinstance(value, str):
            if (key in _EMBEDDED and not embedded) or (embedded and value[:1] in ("{", "[")):
                return self._json_text(value)
            return self._text(value)
        if isinstance(value, dict):
            if not embedded:
                return {k: self._walk(v, embedded=False, key=k) for k, v in value.items()}
            fields = self._fields
            return {
                self._text(k): f"[redacted:{k}]"
                if k.lower() in fields
                else self._walk(v, embedded=True, key=k)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._walk(v, embedded=embedded) for v in value]
        if (
            embedded
            and self._patterns
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            text = repr(value)
            redacted = self._text(text)
            return value if redacted == text else redacted  # a card number sent as a number
        return value

    def _json_text(self, text: str) -> str:
        try:
            inner = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError):
            # Not JSON (a model's malformed arguments): its fields cannot be found one by
            # one, so text that names one is withheld whole.
            if self._field_words is not None and self._field_words.search(text):
                return "[redacted:malformed]"
            return self._text(text)
        return _encoder.encode(self._walk(inner, embedded=True)).decode()

    def _text(self, text: str) -> str:
        for name, pattern in self._patterns:
            text = pattern.sub(f"[redacted:{name}]", text)
        return text
