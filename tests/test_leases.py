"""Leases while a run is advanced: the keeper renews them whatever the run waits on (the
model, a long tool, a graph node), on the event loop's clock rather than the run's; a writer
whose lease another owner took over is fenced: its driver stops and nothing it appends lands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from router import (
    END,
    Engine,
    Graph,
    GraphEngine,
    LeaseHeld,
    LeaseLost,
    ManualClock,
    Principal,
    Runtime,
    ScriptedModel,
    SqliteStore,
    Tools,
    tool,
)
from router.models.scripted import call, say

pytestmark = pytest.mark.anyio
USER = Principal(id="u")


async def until(condition: Any) -> None:
    """Wait until ``condition()`` holds (the keeper runs on real time)."""
    with anyio.fail_after(60):
        while not condition():
            await anyio.sleep(0.01)


async def test_a_long_tool_keeps_its_runs_lease(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        # The run's own clock stands still: renewals do not depend on it.
        runtime = Runtime(store, clock=ManualClock(1_000_000), owner="w", lease_ttl_s=0.3)
        other = Runtime(store, owner="other")

        @tool(idempotent=True)
        async def slow() -> str:
            """Takes longer than the lease lasts."""
            await until(lambda: runtime.keeper.renewals >= 4)  # over 0.4 s: past the TTL
            with pytest.raises(LeaseHeld) as info:  # renewed: still this run's
                await other.store.acquire_lease("r", "other", 60)
            assert info.value.owner == "w"
            return "done"

        model = ScriptedModel([call("slow", "{}"), say("ok")])
        engine = Engine(runtime, model, Tools([slow]))
        result = await engine.start("go", principal=USER, run_id="r")
        assert result.phase == "done", result.reason
        await other.store.acquire_lease("r", "other", 60)  # released at the end


async def test_a_run_taken_over_mid_tool_stops_and_writes_nothing_more(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        runtime = Runtime(store, owner="w", lease_ttl_s=60)
        taken = anyio.Event()
        ran: list[str] = []

        @tool(idempotent=True)
        async def slow() -> str:
            """Outlives its process's hold on the run."""
            await taken.wait()
            ran.append("slow")
            return "late"

        model = ScriptedModel([call("slow", "{}"), say("ok")])
        engine = Engine(runtime, model, Tools([slow]))
        before: list[int] = []

        async def take_over() -> None:
            await until(lambda: runtime.keeper._held)
            before.append(len(await store.read("r")))
            await store.break_lease("r")  # an operator (or a worker) takes the run
            await store.acquire_lease("r", "new owner", 60)
            taken.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(take_over)
            with pytest.raises(LeaseLost):
                await engine.start("go", principal=USER, run_id="r")
        assert ran == ["slow"]
        assert len(await store.read("r")) == before[0]  # the tool's result never landed


async def test_a_driver_whose_lease_the_keeper_found_lost_writes_nothing_more(
    tmp_path: Path,
) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        runtime = Runtime(store, owner="w", lease_ttl_s=60)
        found = anyio.Event()

        async def slow(state: dict[str, Any]) -> dict[str, Any]:
            await found.wait()
            return {"n": 1}

        g = Graph("slow")
        g.add_node("slow", slow)
        g.start("slow")
        g.edge("slow", END)
        engine = GraphEngine(runtime, g.compile())
        appends: list[int] = []

        async def take_over() -> None:
            await until(lambda: runtime.keeper._held)
            await store.break_lease("r")
            await runtime.keeper.renew()  # finds the lease lost
            appends.append(store.appends)
            found.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(take_over)
            with pytest.raises(LeaseLost):
                await engine.start({}, principal=USER, run_id="r")
        assert store.appends == appends[0]  # refused before any round trip
        kinds = [e.kind for e in await store.read("r")]
        assert "node_finished" not in kinds and "run_cancelled" not in kinds
