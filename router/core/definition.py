"""The definition of an agent, hashed: what decides a run besides its own events.

A run records the hash at start, with each part's own hash (``parts``). Resuming under a
different definition (a tool added or removed; a schema, permission, idempotency flag,
timeout or retry schedule changed; a tool's code or the answer check's code changed; the
access policy, the price table, the redaction or review rules changed; another model) is
refused, naming the parts that changed, unless the operator names a migration, which the
log records. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from hashlib import sha256
from typing import Any

import msgspec

from .access import Policy
from .events import GraphStarted, ReviewRules, RunMigrated, RunStarted
from .fingerprint import code_fingerprint
from .limits import PriceTable
from .redaction import Redaction
from .tools import Tools

__all__ = [
    "changed_parts",
    "definition_parts",
    "digest_parts",
    "hash_parts",
    "part_digest",
    "recorded_parts",
]

_encoder = msgspec.json.Encoder(order="deterministic")


# A part's digest is cut to 64 bits: it only names what changed (the definition hash, over
# every part, is whole), and a run records its parts in its first event.
PART_DIGITS = 16


def part_digest(hexdigest: str) -> str:
    """A part's hash as a run records it."""
    return hexdigest[:PART_DIGITS]


def _digest(value: Any) -> str:
    return part_digest(sha256(_encoder.encode(value)).hexdigest())


def definition_parts(
    model: str,
    tools: Tools,
    prices: PriceTable,
    redaction: Redaction | None = None,
    review: ReviewRules | None = None,
    output_check: Callable[[str], str | None] | None = None,
) -> dict[str, str]:
    """Each part of an agent's definition, hashed, by name."""
    parts = {"model": _digest(model)}
    for t in tools:
        parts[f"tool:{t.name}"] = _digest(
            {
                "schema": t.schema,
                "permissions": sorted(t.permissions),
                "idempotent": t.idempotent,
                "inline": t.inline,
                "timeout_s": t.timeout_s,
                "retry": t.retry,
                "max_argument_bytes": t.max_argument_bytes,
                "code": code_fingerprint(t.fn),
            }
        )
    parts["policy"] = _digest(_policy(tools.policy))
    parts["prices"] = _digest(prices.rates())
    parts["redaction"] = _digest(redaction.describe() if redaction else None)
    parts["review"] = _digest(review)
    if output_check is not None:
        parts["output_check"] = part_digest(code_fingerprint(output_check))
    return parts


def digest_parts(**parts: Any) -> dict[str, str]:
    """Each part (plain data), hashed, by name."""
    return {name: _digest(value) for name, value in parts.items()}


def hash_parts(parts: Mapping[str, str]) -> str:
    """The definition hash: one whole digest over every part."""
    return sha256(_encoder.encode(dict(parts))).hexdigest()


def changed_parts(recorded: Mapping[str, str], current: Mapping[str, str]) -> tuple[str, ...]:
    """The names of the parts added, removed or changed, sorted."""
    return tuple(
        sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k))
    )


def recorded_parts(events: Sequence[Any]) -> dict[str, str]:
    """The parts of the definition a run is under, as its log records them: its first
    event's, or its last migration's."""
    for event in reversed(events):
        if isinstance(event, RunMigrated) and event.parts:
            return dict(event.parts)
    first = events[0] if events else None
    return dict(first.parts) if isinstance(first, RunStarted | GraphStarted) else {}


def _policy(policy: Policy) -> dict[str, list[str]]:
    return {role: sorted(perms) for role, perms in policy.grants().items()}
