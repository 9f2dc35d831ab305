"""How long-term memory ranks, the same for every store. Pure.

score = w.similarity * cosine(query, item)
      + w.recency * 0.5 ** (days since the item was last used / w.half_life_days)
      + w.importance * item.importance

Ties are broken by id, so equal inputs rank equally on SQLite and on PostgreSQL. Vectors
are stored as unit-length float32; a search's first pass compares their sign bits (one bit a
dimension, XOR and a popcount per item), and only the candidates it keeps are scored
exactly.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Iterable, Sequence
from operator import mul
from typing import Any

from ..core.protocols import RankWeights, Recalled
from ..errors import ConfigError

__all__ = [
    "Scored",
    "candidates",
    "code_bytes",
    "code_of",
    "cosine",
    "pack",
    "rank",
    "recency",
    "sign_code",
    "unpack",
]

_DAY_US = 86_400 * 1_000_000

# (id, text, vector, importance, last_used_at): what a store hands over to be scored
Scored = tuple[str, str, bytes, float, int]


def pack(values: Sequence[float]) -> bytes:
    """A vector as stored: unit length, float32. Raises ConfigError for a zero vector."""
    norm = math.sqrt(math.fsum(v * v for v in values))
    if not norm or not math.isfinite(norm):
        raise ConfigError("an embedding must be a finite, non-zero vector")
    return array("f", [v / norm for v in values]).tobytes()


def unpack(blob: bytes) -> array[float]:
    vector = array("f")
    vector.frombytes(blob)
    return vector


def cosine(a: array[float], b: array[float]) -> float:
    """The cosine of two unit vectors (their dot product), rounded to 6 places so that the
    order of float additions never changes a ranking."""
    return round(math.fsum(map(mul, a, b)), 6)


def sign_code(blob: bytes) -> tuple[int, int]:
    """The vector's signs as two bit sets: the dimensions above zero and those below (a
    sparse vector's zeros are in neither)."""
    above = below = 0
    for i, v in enumerate(unpack(blob)):
        if v > 0:
            above |= 1 << i
        elif v < 0:
            below |= 1 << i
    return above, below


def code_bytes(blob: bytes) -> bytes:
    """The sign code as stored: the two bit sets, each as wide as the vector's dimensions."""
    above, below = sign_code(blob)
    width = len(blob) // 32 + 1
    return above.to_bytes(width, "little") + below.to_bytes(width, "little")


def code_of(stored: bytes) -> tuple[int, int]:
    half = len(stored) // 2
    return int.from_bytes(stored[:half], "little"), int.from_bytes(stored[half:], "little")


def recency(last_used_at: int, now_us: int, half_life_days: float) -> float:
    age_days = max(0, now_us - last_used_at) / _DAY_US
    return float(0.5 ** (age_days / half_life_days))


def rank(
    items: Iterable[Scored] | Iterable[Any],
    query: bytes,
    *,
    now_us: int,
    weights: RankWeights,
    limit: int,
) -> list[Recalled]:
    """The ``limit`` best of ``items`` for the query vector, best first, ties by id."""
    q = unpack(query)
    scored = []
    for item_id, text, vector, importance, last_used_at in items:
        similarity = cosine(q, unpack(vector))
        score = round(
            weights.similarity * similarity
            + weights.recency * recency(last_used_at, now_us, weights.half_life_days)
            + weights.importance * importance,
            9,
        )
        scored.append(Recalled(item_id, text, score, similarity, importance, last_used_at))
    return heapq.nsmallest(limit, scored, key=lambda r: (-r.score, r.id))


def candidates(codes: Iterable[tuple[str, tuple[int, int]]], query: bytes, count: int) -> list[str]:
    """The ids of the ``count`` items whose signs agree most with the query's (dimensions
    of the same sign less those of opposite signs), ties by id: a search's first pass."""
    qa, qb = sign_code(query)

    def disagreement(code: tuple[int, int]) -> int:
        a, b = code
        return (
            (qa & b).bit_count()
            + (qb & a).bit_count()
            - (qa & a).bit_count()
            - (qb & b).bit_count()
        )

    return [i for _, i in heapq.nsmallest(count, ((disagreement(c), i) for i, c in codes))]
