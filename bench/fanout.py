"""fanout: a start node, 8 branch nodes in parallel that each append their index to a
list, then a join node that sums the list. A step is one node execution (10 per run)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from router import Runtime
from router.graph import END, CompiledGraph, Graph, GraphEngine, append

from .measure import Record, head_to_head
from .peers import Peer
from .system import USER

BRANCHES = 8
NODES = BRANCHES + 2  # start, the branches, join
TOTAL = sum(range(BRANCHES))


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


async def run(quick: bool, peers: list[Peer], tmp: Path) -> list[Record]:
    graph = build(BRANCHES)

    def one_run(store: Any) -> Callable[[], Awaitable[Any]]:
        engine = GraphEngine(Runtime(store, owner="bench"), graph)
        return lambda: engine.start({"results": []}, principal=USER)

    def check(result: Any) -> None:
        assert result.phase == "done" and result.state["total"] == TOTAL, result

    return await head_to_head(
        "fanout",
        one_run=one_run,
        check=check,
        steps=NODES,
        peers=peers,
        method="fanout",
        peer_options={"branches": BRANCHES},
        runs=40 if quick else 300,
        tmp=tmp,
    )
