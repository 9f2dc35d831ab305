"""Workers: they claim the runs nobody advances and resume them by the name their first
event records; they leave runs waiting for a person alone until a decision; they park a run
that fails to resume again and again; on shutdown they hand runs back unfinished."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from router import (
    END,
    ConfigError,
    Engine,
    Graph,
    GraphEngine,
    Message,
    ModelTurn,
    Principal,
    ReviewRules,
    Runtime,
    ScriptedModel,
    SqliteStore,
    Tools,
    Worker,
    review_run,
    tool,
)
from router.core.events import RunParked, decode_event
from router.core.protocols import Store
from router.models.scripted import call, say

pytestmark = pytest.mark.anyio
USER = Principal(id="u")


class Died(BaseException):
    """Stands for the process dying mid-run."""


class DiesFirst:
    """A model whose first answer never comes back (its process died), then a script."""

    name = "scripted"

    def __init__(self, turns: Sequence[ModelTurn]) -> None:
        self.died = False
        self.script = ScriptedModel(turns)

    async def respond(self, messages: Sequence[Message], tools: Sequence[Any]) -> ModelTurn:
        if not self.died:
            self.died = True
            raise Died
        return await self.script.respond(messages, tools)


@tool(inline=True, idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def agent(runtime: Runtime | Store, model: Any, name: str = "adder", **options: Any) -> Engine:
    return Engine(runtime, model, Tools([add]), agent=name, **options)


def script() -> list[ModelTurn]:
    return [call("add", '{"a": 1, "b": 2}'), say("3")]


async def dead_run(store: Store, run_id: str, name: str = "adder") -> None:
    """A run whose process died before its first model answer: active, its lease lapsed."""
    with pytest.raises(Died):
        await agent(Runtime(store, owner="dead"), DiesFirst(script()), name).start(
            "add", principal=USER, run_id=run_id
        )


async def serve_until(worker: Worker, condition: Any) -> None:
    """Run the worker until ``condition()`` holds, then stop it gracefully."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.serve)
        with anyio.fail_after(60):
            while not condition():
                await anyio.sleep(0.01)
        worker.stop()


async def status(store: Store, run_id: str) -> str:
    return next(s.status for s in await store.runs() if s.run_id == run_id)


async def test_a_worker_resumes_dead_runs_by_their_agents_name(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        for i in range(5):
            await dead_run(store, f"r{i}")
        runtime = Runtime(store, owner="w1")
        worker = Worker(runtime, [agent(store, ScriptedModel(script() * 5))], poll_s=0.05)
        await serve_until(worker, lambda: worker.resumed == 5)
        for i in range(5):
            assert await status(store, f"r{i}") == "ended"
            kinds = [e.kind for e in await store.read(f"r{i}")]
            assert kinds.count("run_resumed") == 1 and kinds[-1] == "model_responded"
        assert await store.claim("w2", 60, 10) == []  # nothing is left to claim


async def test_a_run_waiting_for_a_person_is_left_alone_until_a_decision(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        rules = ReviewRules(before_tools=frozenset({"add"}))
        waiting = await agent(store, ScriptedModel(script()), review=rules).start(
            "add", principal=USER, run_id="r"
        )
        assert waiting.phase == "awaiting_review" and await status(store, "r") == "waiting"
        assert await store.claim("w", 60, 10) == []
        await review_run(store, "r", "approve", by="ann")
        assert await status(store, "r") == "active"
        resumer = agent(store, ScriptedModel(script()[1:]), review=rules)
        worker = Worker(Runtime(store, owner="w"), [resumer])
        await serve_until(worker, lambda: worker.resumed == 1)
        assert await status(store, "r") == "ended"


async def test_a_run_that_fails_to_resume_is_parked_with_the_reason(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        await dead_run(store, "r", name="retired")  # no worker knows this agent any more
        runtime = Runtime(store, owner="w", lease_ttl_s=0.05)  # a failed try holds it off briefly
        worker = Worker(runtime, [agent(store, ScriptedModel([]))], poll_s=0.02, park_after=3)
        await serve_until(worker, lambda: worker.parked == 1)
        parked = decode_event((await store.read("r"))[-1].payload)
        assert isinstance(parked, RunParked) and parked.attempts == 3
        assert "no definition registered for the agent 'retired'" in parked.reason
        assert await status(store, "r") == "parked"
        assert await store.claim("w", 60, 10) == []  # never tried again by a worker


async def test_a_worker_resumes_graph_runs_and_leaves_child_runs_to_their_parents(
    tmp_path: Path,
) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:

        async def double(state: dict[str, Any]) -> dict[str, Any]:
            return {"n": state["n"] * 2}

        g = Graph("doubler")
        g.add_node("double", double)
        g.start("double")
        g.edge("double", END)
        graph = GraphEngine(store, g.compile())
        await graph.start({"n": 2}, principal=USER, run_id="g")
        # Make it look like its process died mid-run: reopen it as active and lapsed.
        lease = await store.acquire_lease("g", "dead", 0)
        await store.release_lease("g", "dead", lease.token, "active")
        await agent(Runtime(store), ScriptedModel(script())).start(
            "add", principal=USER, run_id="child", parent_run_id="g"
        )
        lease = await store.acquire_lease("child", "dead", 0)
        await store.release_lease("child", "dead", lease.token, "active")
        worker = Worker(Runtime(store, owner="w"), [graph, agent(store, ScriptedModel([]))])
        await serve_until(worker, lambda: worker.resumed == 1 and not worker.running)
        assert await status(store, "g") == "ended"
        assert await status(store, "child") == "child"  # its parent's driver resumes it


async def test_a_worker_shutting_down_hands_its_runs_back_unfinished(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        started = anyio.Event()

        @tool(idempotent=True)
        async def slow() -> str:
            """Never finishes on the worker that shuts down."""
            started.set()
            await anyio.sleep_forever()
            return ""

        turns = [call("slow", "{}"), say("done")]
        with pytest.raises(Died):  # its first process died before the model answered
            dying = Engine(Runtime(store, owner="dead"), DiesFirst(turns), Tools([slow]), agent="s")
            await dying.start("go", principal=USER, run_id="r")
        engine = Engine(store, ScriptedModel(turns), Tools([slow]), agent="s")
        worker = Worker(Runtime(store, owner="w1"), [engine], grace_s=0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.serve)
            await started.wait()
            worker.stop()
        kinds = [e.kind for e in await store.read("r")]
        assert "run_cancelled" not in kinds and kinds[-1] == "tool_started"
        assert await status(store, "r") == "active"
        (lease,) = await store.claim("w2", 60, 10)  # given back at once, not left to lapse
        assert lease.run_id == "r"


async def test_a_worker_refuses_unnamed_or_duplicate_definitions(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        runtime = Runtime(store)
        with pytest.raises(ConfigError, match="must have a name"):
            Worker(runtime, [Engine(store, ScriptedModel([]), Tools([add]))])
        with pytest.raises(ConfigError, match="two definitions"):
            Worker(runtime, [agent(store, ScriptedModel([])), agent(store, ScriptedModel([]))])
        with pytest.raises(ConfigError, match="concurrency"):
            Worker(runtime, [], concurrency=0)
