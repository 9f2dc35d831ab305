"""The definition of an agent, hashed: what decides a run besides its own events.

A run records the hash at start. Resuming under a different definition (a tool added or
removed, a schema, permission, idempotency flag, timeout or retry schedule changed, the
access policy or the price table changed, another model) is refused unless the operator
names a migration, which the log records. Pure.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

import msgspec

from .access import Policy
from .events import ReviewRules
from .limits import PriceTable
from .redaction import Redaction
from .tools import Tools

__all__ = ["definition_hash", "describe"]

_encoder = msgspec.json.Encoder(order="deterministic")


def describe(
    model: str,
    tools: Tools,
    prices: PriceTable,
    redaction: Redaction | None = None,
    review: ReviewRules | None = None,
) -> dict[str, Any]:
    """The definition as plain data, in a canonical shape."""
    return {
        "model": model,
        "tools": [
            {
                "schema": t.schema,
                "permissions": sorted(t.permissions),
                "idempotent": t.idempotent,
                "inline": t.inline,
                "timeout_s": t.timeout_s,
                "retry": t.retry,
                "max_argument_bytes": t.max_argument_bytes,
            }
            for t in tools
        ],
        "policy": _policy(tools.policy),
        "prices": prices.rates(),
        "redaction": redaction.describe() if redaction else None,
        "review": review,
    }


def definition_hash(
    model: str,
    tools: Tools,
    prices: PriceTable,
    redaction: Redaction | None = None,
    review: ReviewRules | None = None,
) -> str:
    return sha256(_encoder.encode(describe(model, tools, prices, redaction, review))).hexdigest()


def _policy(policy: Policy) -> dict[str, list[str]]:
    return {role: sorted(perms) for role, perms in policy.grants().items()}
