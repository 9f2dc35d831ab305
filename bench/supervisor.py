"""supervisor: a supervisor agent delegates to 3 worker agents, one after another, then
answers. Each worker is a child run (router) or its own subgraph (LangGraph) that answers
at once. A step is one model turn: 4 supervisor turns and 1 per worker, 7 per run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from router import Engine, Runtime, ScriptedModel, Tools
from router.agents import agent_tool
from router.models.scripted import call, say

from .measure import Record, head_to_head
from .peers import Peer
from .system import USER

WORKERS = 3
STEPS = WORKERS + 1 + WORKERS  # the supervisor's turns, then one turn per worker


def build(store: Any, workers: int) -> Engine:
    """The supervisor engine: on turn i < ``workers`` it calls the agent tool ``w<i>``,
    then answers "done". Every worker answers "result <i>". All share ``store``."""
    tools = []
    for i in range(workers):
        worker = Engine(
            Runtime(store, owner="bench"),
            ScriptedModel([say(f"result {i}")]),
            Tools([]),
            agent=f"w{i}",
        )
        tools.append(agent_tool(worker, name=f"w{i}", description=f"Worker {i}: do a task."))
    script = [call(f"w{i}", f'{{"task": "task {i}"}}') for i in range(workers)] + [say("done")]
    return Engine(
        Runtime(store, owner="bench"), ScriptedModel(script), Tools(tools), agent="supervisor"
    )


async def run(quick: bool, peers: list[Peer], tmp: Path) -> list[Record]:
    def one_run(store: Any) -> Callable[[], Awaitable[Any]]:
        engine = build(store, WORKERS)
        return lambda: engine.start(
            "do the tasks", principal=USER
        )  # a new run id, so new child ids

    def check(result: Any) -> None:
        assert result.phase == "done" and result.output == "done", result
        assert result.steps == WORKERS + 1 and result.tool_calls == WORKERS, result

    return await head_to_head(
        "supervisor",
        one_run=one_run,
        check=check,
        steps=STEPS,
        peers=peers,
        method="supervisor",
        peer_options={"workers": WORKERS},
        runs=40 if quick else 300,
        tmp=tmp,
    )
