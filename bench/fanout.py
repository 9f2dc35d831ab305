"""fanout: a start node, 8 branch nodes in parallel that each append their index to a
list, then a join node that sums the list. A step is one node execution (10 per run)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from router.graph import END, CompiledGraph, Graph, append
from router.workflow import GraphEngine

from .measure import Contestant, Record, compare, interleave, record
from .peers import Peer, Samples
from .system import PROMISES, USER, VERSION, open_store

BRANCHES = 8
NODES = BRANCHES + 2  # start, the branches, join
TOTAL = sum(range(BRANCHES))
COMPARABLE = {"none": "memory", "memory": "memory", "sqlite": "commit"}


def build(branches: int) -> CompiledGraph:
    async def start(state: dict[str, Any]) -> dict[str, Any]:
        return {}

    def branch(i: int) -> Any:
        async def run(state: dict[str, Any]) -> dict[str, Any]:
            return {"results": [i]}

        return run

    async def join(state: dict[str, Any]) -> dict[str, Any]:
        return {"total": sum(state["results"])}

    g = Graph("fanout", reducers={"results": append})
    g.add_node("start", start)
    for i in range(branches):
        g.add_node(f"b{i}", branch(i))
    g.add_node("join", join)
    g.start("start")
    g.fanout("start", [f"b{i}" for i in range(branches)], then="join")
    g.edge("join", END)
    return g.compile()


async def time_runs(engine: GraphEngine, runs: int) -> list[float]:
    """Per-step microseconds of ``runs`` whole runs (run time / node executions)."""
    per_step: list[float] = []
    for _ in range(runs):
        begin = time.perf_counter_ns()
        result = await engine.start({"results": []}, principal=USER)
        elapsed = time.perf_counter_ns() - begin
        assert result.phase == "done" and result.state["total"] == TOTAL, result
        per_step.append(elapsed / 1000 / NODES)
    return per_step


async def run(quick: bool, peers: list[Peer], tmp: Path) -> list[Record]:
    runs = 40 if quick else 300
    graph = build(BRANCHES)
    contestants: dict[tuple[str, str, str], Contestant] = {}
    stores = []
    for kind in ("memory", "commit"):
        store = await open_store(kind, tmp)
        stores.append(store)
        engine = GraphEngine(store, graph, owner="bench")

        async def measure(n: int, engine: GraphEngine = engine, store: Any = store) -> Samples:
            before = getattr(store, "commits", 0)
            per_step = await time_runs(engine, n)
            return Samples(per_step, commits_per_step=(getattr(store, "commits", 0) - before) / (n * NODES))

        await measure(5)  # warm up
        contestants[("router", VERSION, kind)] = measure
    for peer in peers:
        fanout = getattr(peer, "fanout", None)
        if fanout is None:
            continue
        for kind in peer.stores:
            async def peer_measure(n: int, fanout: Any = fanout, kind: str = kind) -> Samples:
                return fanout(kind, branches=BRANCHES, runs=n, tmp=tmp)  # type: ignore[no-any-return]

            contestants[(peer.system, peer.version, kind)] = peer_measure
    results = await interleave(contestants, runs)
    for store in stores:
        await store.aclose()
    records = [
        record("fanout", s, v, k, results[(s, v, k)], PROMISES.get(k, "") if s == "router" else "")
        for (s, v, k) in contestants
    ]
    compare(records, COMPARABLE)
    return records
