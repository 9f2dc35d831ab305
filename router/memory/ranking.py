"""How long-term memory ranks, the same for every store. Pure.

score = w.similarity * cosine(query, item)
      + w.recency * 0.5 ** (days since the item was last used / w.half_life_days)
      + w.importance * item.importance

Ties are broken by id, so equal inputs rank equally on SQLite and on PostgreSQL. Vectors
are stored as unit-length float32 with their signs as two bit sets (``FirstPass``): a
search's first pass scores every item with the same formula, the cosine replaced by the
agreement of signs (a few popcounts per item), and only the ``first_pass_size`` best are
scored exactly.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Iterable, Sequence
from operator import mul
from typing import Any, final

from ..core.protocols import MemoryItem, RankWeights, Recalled
from ..errors import ConfigError

__all__ = [
    "FirstPass",
    "FirstPasses",
    "Scored",
    "code_bytes",
    "code_of",
    "cosine",
    "evicted",
    "first_pass_size",
    "pack",
    "rank",
    "recency",
    "sign_code",
    "stored_rows",
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
    """The cosine of two unit vectors (their dot product, summed in dimension order),
    rounded to 6 places."""
    return round(float(sum(map(mul, a, b))), 6)


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


def first_pass_size(limit: int) -> int:
    """How many items a search's first pass keeps for exact scoring, for ``limit`` results
    (measured with the hashed embedder: see the memory_recall bench workload)."""
    return max(30 * limit, 300)


def stored_rows(items: Sequence[MemoryItem]) -> list[tuple[Any, ...]]:
    """Items as both memories store them: namespace, id, text, vector, sign code,
    importance, created, last used, expires, ttl. ConfigError unless they name exactly one
    namespace."""
    names = {i.namespace for i in items}
    if len(names) != 1 or "" in names:
        raise ConfigError(f"a memory write names exactly one namespace, not {sorted(names)}")
    return [
        (
            i.namespace,
            i.id,
            i.text,
            i.vector,
            code_bytes(i.vector),
            i.importance,
            i.created_at,
            i.last_used_at or i.created_at,
            i.expires_at,
            i.ttl_us,
        )
        for i in items
    ]


def evicted(
    rows: Sequence[tuple[str, float, int]],
    keep: int,
    *,
    by: str,
    weights: RankWeights,
    now_us: int,
) -> list[str]:
    """Which of a namespace's items (id, importance, last used) go for it to keep ``keep``:
    the lowest score without a query (recency and importance), or (``by="lru"``) the least
    recently used; ties by id."""
    if by not in ("score", "lru"):
        raise ConfigError(f"evict by score or lru, not {by!r}")

    def worth(row: tuple[str, float, int]) -> tuple[float, str]:
        item_id, importance, last_used = row
        if by == "lru":
            return (float(last_used), item_id)
        rest = weights.recency * recency(last_used, now_us, weights.half_life_days)
        return (rest + weights.importance * importance, item_id)

    return [row[0] for row in sorted(rows, key=worth)[: max(0, len(rows) - keep)]]


@final
class FirstPass:
    """A namespace's items as a search's first pass reads them: sign codes, importance and
    last use. It ranks every live item by an approximate score, the same formula with the
    cosine replaced by the agreement of signs (dimensions of the same sign less those of
    opposite signs, over the square roots of both vectors' non-zero dimensions), and keeps
    the best ``count`` for exact scoring. Recency is kept as 2 ** (last use / half life)
    relative to the newest use, so a query multiplies rather than raises a power per item.
    """

    def __init__(
        self,
        rows: Iterable[tuple[str, bytes, float, int, int]] | Iterable[Any],
        half_life_days: float,
    ) -> None:
        self._half_life_us = half_life_days * _DAY_US
        rows = list(rows)  # (id, stored code, importance, last_used_at, expires_at)
        self._ref = max((r[3] for r in rows), default=0)
        self._index = {r[0]: n for n, r in enumerate(rows)}
        self._items: list[list[Any]] = []
        for item_id, stored, importance, last_used, expires in rows:
            above, below = code_of(stored)
            nonzero = (above | below).bit_count()
            scale = 1 / math.sqrt(nonzero) if nonzero else 0.0
            self._items.append(
                [item_id, above, below, scale, importance, self._lift(last_used), expires]
            )

    def _lift(self, last_used_at: int) -> float:
        return float(2.0 ** ((last_used_at - self._ref) / self._half_life_us))

    def used(self, ids: Iterable[str], now_us: int) -> None:
        """The search just marked these items used (other processes' marks show up when
        the namespace next changes)."""
        for item_id in ids:
            n = self._index.get(item_id)
            if n is not None:
                self._items[n][5] = self._lift(now_us)

    def candidates(
        self, query: bytes, *, now_us: int, weights: RankWeights, count: int
    ) -> list[str]:
        qa, qb = sign_code(query)
        nonzero = (qa | qb).bit_count()
        w_sim = weights.similarity / math.sqrt(nonzero) if nonzero else 0.0
        w_rec = weights.recency * 2.0 ** (-(now_us - self._ref) / self._half_life_us)
        w_imp = weights.importance

        def score(item: list[Any]) -> float:
            _, a, b, scale, importance, lift, _ = item
            agree = (qa & a).bit_count() + (qb & b).bit_count()
            agree -= (qa & b).bit_count() + (qb & a).bit_count()
            return float(w_sim * scale * agree + w_rec * lift + w_imp * importance)

        live = (i for i in self._items if i[6] == 0 or i[6] > now_us)
        return [i[0] for i in heapq.nlargest(count, live, key=score)]


@final
class FirstPasses:
    """A memory's first passes, one per namespace, kept per process: each is reloaded when
    the namespace's version (bumped by every write) or the half life has moved, and learns
    of the items a search in this process marked used."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[int, float, FirstPass]] = {}

    def get(self, namespace: str, version: int, half_life_days: float) -> FirstPass | None:
        kept = self._kept.get(namespace)
        return kept[2] if kept is not None and kept[:2] == (version, half_life_days) else None

    def load(
        self, namespace: str, version: int, half_life_days: float, rows: Iterable[Any]
    ) -> FirstPass:
        """The first pass built from ``rows`` (id, code, importance, last used, expires)."""
        first = FirstPass(rows, half_life_days)
        self._kept[namespace] = (version, half_life_days, first)
        return first

    def used(self, namespace: str, ids: Iterable[str], now_us: int) -> None:
        kept = self._kept.get(namespace)
        if kept is not None:
            kept[2].used(ids, now_us)
