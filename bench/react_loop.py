"""react_loop: a ReAct loop of 10 tool steps and a final answer, zero-latency model.

Only router is timed: the scripted model answers at once and the tool adds two numbers.
Each sample is one whole run; its time is divided by its 11 model steps.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from router import Engine, Limits, MemoryStore, Principal, ScriptedModel, SqliteStore, Tools, tool
from router.models.scripted import call, say
from router.store.sqlite import Durability

from .measure import Record, peak_rss_mb, summarize

import router

STEPS = 10
USER = Principal(id="bench", roles=frozenset({"bench"}))


@tool(inline=True, idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


SCRIPT = [call("add", f'{{"a": {i}, "b": 1}}') for i in range(STEPS)] + [say("done")]
TOOLS = Tools([add])
PROMISES = {
    "memory": "nothing survives the process",
    "commit": "committed before each side effect; survives kill -9, not power loss",
    "group": "as commit, one commit shared by the runs of a loop turn",
    "fsync": "fsynced before each side effect; survives power loss",
    "group_fsync": "as fsync, one fsync shared by concurrent runs",
}


async def _runs(engine: Engine, runs: int, store: object) -> list[float]:
    per_step: list[float] = []
    limits = Limits(max_steps=STEPS + 5)
    for _ in range(runs):
        begin = time.perf_counter_ns()
        result = await engine.start("add them", principal=USER, limits=limits)
        elapsed = time.perf_counter_ns() - begin
        assert result.steps == STEPS + 1, result
        per_step.append(elapsed / 1000 / result.steps)
    return per_step


async def measure(store_name: str, runs: int) -> Record:
    with tempfile.TemporaryDirectory() as tmp:
        if store_name == "memory":
            store: MemoryStore | SqliteStore = MemoryStore()
        else:
            store = await SqliteStore.open(Path(tmp) / "bench.db", Durability(store_name))
        try:
            engine = Engine(store, ScriptedModel(SCRIPT), TOOLS, owner="bench")
            await _runs(engine, max(3, runs // 10), store)  # warm up
            appends_before = store.appends
            samples = await _runs(engine, runs, store)
            commits = (store.appends - appends_before) / (runs * (STEPS + 1))
        finally:
            await store.aclose()
    p50, p99, rate = summarize(samples)
    return Record(
        workload="react_loop", system="router", version=router.__version__, store=store_name,
        p50_us_per_step=round(p50, 1), p99_us_per_step=round(p99, 1), steps_per_s=round(rate),
        peak_rss_mb=round(peak_rss_mb(), 1), commits_per_step=round(commits, 3), samples=len(samples),
        note=PROMISES[store_name],
    )


async def run(quick: bool) -> Sequence[Record]:
    runs = {"memory": 200, "commit": 200, "group": 200, "fsync": 40, "group_fsync": 40}
    scale = 0.25 if quick else 1.0
    return [await measure(name, max(10, int(n * scale))) for name, n in runs.items()]
