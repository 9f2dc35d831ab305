"""supervisor: a supervisor agent delegates to 3 worker agents, one after another, then
answers. Each worker is a child run (router) or its own subgraph (LangGraph) that answers
at once. A step is one model turn: 4 supervisor turns and 1 per worker, 7 per run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from router import Engine, ScriptedModel, Tools
from router.agents import agent_tool
from router.models.scripted import call, say

from .measure import Contestant, Record, compare, interleave, record
from .peers import Peer, Samples
from .system import PROMISES, USER, VERSION, open_store

WORKERS = 3
STEPS = WORKERS + 1 + WORKERS  # the supervisor's turns, then one turn per worker
COMPARABLE = {"none": "memory", "memory": "memory", "sqlite": "commit"}


def build(store: Any, workers: int) -> Engine:
    """The supervisor engine: on turn i < ``workers`` it calls the agent tool ``w<i>``,
    then answers "done". Every worker answers "result <i>". All share ``store``."""
    tools = []
    for i in range(workers):
        worker = Engine(store, ScriptedModel([say(f"result {i}")]), Tools([]), owner="bench", agent=f"w{i}")
        tools.append(agent_tool(worker, name=f"w{i}", description=f"Worker {i}: do a task."))
    script = [call(f"w{i}", f'{{"task": "task {i}"}}') for i in range(workers)] + [say("done")]
    return Engine(store, ScriptedModel(script), Tools(tools), owner="bench", agent="supervisor")


async def time_runs(engine: Engine, runs: int) -> list[float]:
    """Per-step microseconds of ``runs`` whole supervisor runs (run time / model turns)."""
    per_step: list[float] = []
    for _ in range(runs):
        begin = time.perf_counter_ns()
        result = await engine.start("do the tasks", principal=USER)  # a new run id, so new child ids
        elapsed = time.perf_counter_ns() - begin
        assert result.phase == "done" and result.output == "done", result
        assert result.steps == WORKERS + 1 and result.tool_calls == WORKERS, result
        per_step.append(elapsed / 1000 / STEPS)
    return per_step


async def run(quick: bool, peers: list[Peer], tmp: Path) -> list[Record]:
    runs = 40 if quick else 300
    contestants: dict[tuple[str, str, str], Contestant] = {}
    stores = []
    for kind in ("memory", "commit"):
        store = await open_store(kind, tmp)
        stores.append(store)
        engine = build(store, WORKERS)

        async def measure(n: int, engine: Engine = engine, store: Any = store) -> Samples:
            before = getattr(store, "commits", 0)
            per_step = await time_runs(engine, n)
            return Samples(per_step, commits_per_step=(getattr(store, "commits", 0) - before) / (n * STEPS))

        await measure(5)  # warm up
        contestants[("router", VERSION, kind)] = measure
    for peer in peers:
        supervisor = getattr(peer, "supervisor", None)
        if supervisor is None:
            continue
        for kind in peer.stores:
            async def peer_measure(n: int, supervisor: Any = supervisor, kind: str = kind) -> Samples:
                return supervisor(kind, workers=WORKERS, runs=n, tmp=tmp)  # type: ignore[no-any-return]

            contestants[(peer.system, peer.version, kind)] = peer_measure
    results = await interleave(contestants, runs)
    for store in stores:
        await store.aclose()
    records = [
        record("supervisor", s, v, k, results[(s, v, k)], PROMISES.get(k, "") if s == "router" else "")
        for (s, v, k) in contestants
    ]
    compare(records, COMPARABLE)
    return records
