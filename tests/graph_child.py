"""A graph run in a child process that the kill test SIGKILLs at chosen points: five
rounds of an 8-branch fan-out. After each marker it waits for the parent's "go".

usage: graph_child.py LOG LEDGER RUN_ID   (LEDGER is unused: nodes here have no side effects)
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
from kill_support import Observed, marker

from router import Limits, Principal, Runtime, SqliteStore
from router.core.protocols import Store
from router.graph import END, Graph, GraphEngine, append


def build() -> Graph:
    g = Graph("rounds", reducers={"results": append})

    async def plan(state: dict[str, Any]) -> dict[str, Any]:
        marker(f"plan {state['round']}")
        return {}

    def branch(i: int) -> Any:
        async def run(state: dict[str, Any]) -> dict[str, Any]:
            await anyio.sleep(0)  # let the branches interleave
            marker(f"branch {state['round']}.{i}")
            return {"results": [state["round"] * 10 + i]}

        return run

    async def gather(state: dict[str, Any]) -> dict[str, Any]:
        return {"round": state["round"] + 1, "total": sum(state["results"])}

    g.add_node("plan", plan)
    for i in range(8):
        g.add_node(f"b{i}", branch(i))
    g.add_node("gather", gather)
    g.start("plan")
    g.fanout("plan", [f"b{i}" for i in range(8)], then="gather")
    g.route("gather", lambda s: "plan" if s["round"] < 5 else END, targets={"plan", END})
    return g


async def main(log: str, ledger: str, run_id: str) -> None:
    async with SqliteStore.open(log) as sqlite_store:
        store: Store = Observed(sqlite_store)  # type: ignore[assignment]
        engine = GraphEngine(Runtime(store, owner="kill-test"), build().compile())
        if await sqlite_store.read(run_id):
            result = await engine.resume(run_id)
        else:
            result = await engine.start(
                {"round": 0, "results": []},
                principal=Principal(id="ops"),
                run_id=run_id,
                limits=Limits(max_steps=100),
            )
    print(f"result {result.phase}", flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
