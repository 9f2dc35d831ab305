"""parallel_tools: 3 model turns that each propose 8 add calls at once, then an answer."""

from __future__ import annotations

import time
from pathlib import Path

from .measure import Record, compare, interleave, record
from .peers import Peer, Samples
from .system import PROMISES, USER, VERSION, FakeModel, open_store, router_engine

CALLS, TURNS = 8, 3
COMPARABLE = {"none": "memory", "memory": "memory", "sqlite": "commit"}


async def run(quick: bool, peers: list[Peer], tmp: Path) -> list[Record]:
    runs = 30 if quick else 200
    contestants = {}
    stores = []
    for kind in ("memory", "commit"):
        store = await open_store(kind, tmp)
        stores.append(store)
        engine = router_engine(store, FakeModel(TURNS, CALLS))

        async def measure(n: int, engine=engine, store=store) -> Samples:  # type: ignore[no-untyped-def]
            before = getattr(store, "commits", 0)
            per_step = []
            for _ in range(n):
                begin = time.perf_counter_ns()
                result = await engine.start("add them", principal=USER)
                assert result.tool_calls == CALLS * TURNS, result
                per_step.append((time.perf_counter_ns() - begin) / 1000 / result.steps)
            return Samples(per_step, commits_per_step=(getattr(store, "commits", 0) - before) / (n * (TURNS + 1)))

        await measure(3)
        contestants[("router", VERSION, kind)] = measure
    for peer in peers:
        for kind in peer.stores:
            async def peer_measure(n: int, peer: Peer = peer, kind: str = kind) -> Samples:
                return peer.parallel_tools(kind, calls=CALLS, turns=TURNS, runs=n, tmp=tmp)

            contestants[(peer.system, peer.version, kind)] = peer_measure
    results = await interleave(contestants, runs)
    for store in stores:
        await store.aclose()
    records = [
        record("parallel_tools", s, v, k, results[(s, v, k)], PROMISES.get(k, "") if s == "router" else "")
        for (s, v, k) in contestants
    ]
    compare(records, COMPARABLE)
    return records
