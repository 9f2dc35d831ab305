"""memory_recall: one search of long-term memory on SQLite at 10,000 and 100,000 items of one
namespace (the hashed embedder, 256 dimensions, the default ranking): p50 and p99 per
recall of 10, and recall@10 of the default search against exact search (every item scored)
over the same queries. Recency is left out of the recall@10 comparison (its weight set to
0): a search marks what it found as used, so the second search of a pair would otherwise
see the first one's marks."""

from __future__ import annotations

import random
import time
from pathlib import Path

from router import HashedEmbedder, SqliteMemory
from router.core.protocols import MemoryItem, RankWeights
from router.memory.ranking import pack

from .measure import Record, record, settle
from .peers import Samples
from .system import VERSION

DAY = 86_400 * 1_000_000
NOW = 1_000 * DAY
WORDS = (
    "invoice refund charge customer order shipping delay warehouse parcel address payment "
    "card bank transfer discount coupon loyalty account password login email phone support "
    "ticket priority escalation manager contract renewal subscription plan upgrade downgrade "
    "tax receipt credit debit dispute fraud chargeback currency exchange fee balance limit "
    "statement overdue reminder cancel pause resume trial license seat invoice-number"
).split()


async def _fill(memory: SqliteMemory, n: int, rng: random.Random) -> None:
    embedder = HashedEmbedder()
    batch: list[MemoryItem] = []
    for i in range(n):
        text = " ".join(rng.choices(WORDS, k=rng.randint(5, 12))) + f" #{i}"
        batch.append(
            MemoryItem(
                id=f"m{i:07d}",
                namespace="principal:bench",
                text=text,
                vector=pack(embedder.vector(text)),
                importance=rng.random(),
                created_at=NOW - rng.randrange(90 * DAY),
                last_used_at=NOW - rng.randrange(90 * DAY),
            )
        )
        if len(batch) == 5_000:
            await memory.put(batch)
            batch = []
    await memory.put(batch)


async def _one_size(n: int, queries: int, exact_queries: int, tmp: Path) -> list[Record]:
    rng = random.Random(n)
    embedder = HashedEmbedder()
    async with SqliteMemory.open(tmp / f"memory-{n}.db") as memory:
        await _fill(memory, n, rng)
        texts = [" ".join(rng.choices(WORDS, k=3)) for _ in range(queries)]
        vectors = [pack(embedder.vector(t)) for t in texts]
        weights = RankWeights()
        await memory.search("principal:bench", vectors[0], limit=10, now_us=NOW, weights=weights)
        settle()
        times = []
        for v in vectors:
            begin = time.perf_counter_ns()
            await memory.search("principal:bench", v, limit=10, now_us=NOW, weights=weights)
            times.append((time.perf_counter_ns() - begin) / 1000)
        flat = RankWeights(recency=0.0)
        hits = 0
        for v in vectors[:exact_queries]:
            exact = await memory.search(
                "principal:bench", v, limit=10, now_us=NOW, weights=flat, exact=True
            )
            fast = await memory.search("principal:bench", v, limit=10, now_us=NOW, weights=flat)
            hits += len({r.id for r in exact} & {r.id for r in fast})
    found = hits / (10 * exact_queries)
    return [
        record(
            "memory_recall",
            "router",
            VERSION,
            f"sqlite {n:,}",
            Samples(times),
            f"{n:,} items, recall of 10; recall@10 against exact search {found:.3f} "
            f"over {exact_queries} queries",
            unit="us",
        )
    ]


async def run(quick: bool, peers: object, tmp: Path) -> list[Record]:
    sizes = (10_000, 100_000) if not quick else (2_000, 10_000)
    records: list[Record] = []
    for n in sizes:
        records += await _one_size(n, 50 if quick else 200, 10 if quick else 30, tmp)
    return records
