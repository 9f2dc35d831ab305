"""Child runs on their parent's spine: they execute on the parent's runtime, share what is
left of its budget, report what they spent however they end, are cut at the parent's
deadline and ended with it; a model turn that cannot be recorded is asked once; graph
replay re-decides reviews in the stored (redacted) form; a migration names what changes
next. All on real SQLite files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from router import (
    END,
    DefinitionChanged,
    Engine,
    Graph,
    GraphEngine,
    Limits,
    ManualClock,
    Message,
    ModelTurn,
    Phase,
    Price,
    PriceTable,
    Principal,
    ProposedCall,
    Redaction,
    Retry,
    Runtime,
    ScriptedModel,
    SqliteStore,
    ToolContext,
    Tools,
    Usage,
    review_graph_run,
    tool,
)
from router.agents import agent_tool, run_child
from router.core.events import (
    Event,
    LimitExceeded,
    ReviewRequested,
    RunCancelled,
    RunFailed,
    ToolFailed,
)
from router.core.stored import decode_run
from router.graph import NodeContext, subgraph
from router.models.scripted import call, say
from router.run.log import fold_run

pytestmark = pytest.mark.anyio
USER = Principal(id="u")
PRICES = PriceTable({"scripted": Price(input_per_mtok=1.0, output_per_mtok=0.0)})


def dollars(n: int) -> Usage:
    """A model turn's usage that costs ``n`` dollars under PRICES."""
    return Usage(input_tokens=n * 1_000_000)


async def events_of(store: SqliteStore, run_id: str, cipher: Any = None) -> list[Any]:
    return decode_run(await store.read(run_id), cipher)


class Seen:
    """An observer that keeps the id of every run whose batch it was shown."""

    def __init__(self) -> None:
        self.run_ids: set[str] = set()

    def committed(self, run_id: str, events: Sequence[Event]) -> None:
        self.run_ids.add(run_id)


# --- a child executes on its parent's runtime -------------------------------------------


def sealed_runtime(store: SqliteStore, seen: Seen, clock: ManualClock) -> tuple[Runtime, Any]:
    pytest.importorskip("cryptography")
    from router.crypto import AesGcmCipher

    cipher = AesGcmCipher({"k": os.urandom(32)}, active="k")
    return Runtime(store, cipher=cipher, observers=[seen], clock=clock, owner="o"), cipher


async def assert_on_parents_runtime(
    store: SqliteStore, child_id: str, cipher: Any, seen: Seen, clock: ManualClock
) -> None:
    from router.crypto import key_id_of

    stored = await store.read(child_id)
    assert stored, f"the child run {child_id} was not stored"
    end = clock.now_us()
    sealed = all(s.payload[:1] == b"\x01" and key_id_of(s.payload) == "k" for s in stored)
    observed = child_id in seen.run_ids
    on_clock = all(1_000 <= e.at < end for e in decode_run(stored, cipher))  # its ManualClock
    assert {
        "sealed": sealed,
        "observed": observed,
        "on the parent's clock": on_clock,
    } == dict.fromkeys(("sealed", "observed", "on the parent's clock"), True)


async def test_an_agent_tool_child_runs_on_its_parents_cipher_observers_and_clock(
    tmp_path: Path,
) -> None:
    seen, clock = Seen(), ManualClock(start_us=1_000, step_us=1)
    async with SqliteStore.open(tmp_path / "log.db") as store:
        rt, cipher = sealed_runtime(store, seen, clock)
        worker = Engine(store, ScriptedModel([say("done")]), Tools([]), agent="w")  # bare store
        parent = Engine(
            rt,
            ScriptedModel([call("ask", '{"task": "t"}'), say("ok")]),
            Tools([agent_tool(worker, name="ask", description="Ask the worker.")]),
        )
        result = await parent.start("go", principal=USER, run_id="p")
        assert result.phase is Phase.DONE
        await assert_on_parents_runtime(store, "p/call_1_0", cipher, seen, clock)


async def test_a_subgraph_child_runs_on_its_parents_cipher_observers_and_clock(
    tmp_path: Path,
) -> None:
    async def act(state: dict[str, Any]) -> dict[str, Any]:
        return {"x": 1}

    inner = Graph("inner")
    inner.add_node("act", act)
    inner.start("act")
    inner.edge("act", END)
    seen, clock = Seen(), ManualClock(start_us=1_000, step_us=1)
    async with SqliteStore.open(tmp_path / "log.db") as store:
        rt, cipher = sealed_runtime(store, seen, clock)
        child = GraphEngine(store, inner.compile())  # on the bare store
        outer = Graph("outer")
        outer.add_node("sub", subgraph(child, inputs=lambda s: {}, outputs=lambda s: {"x": s["x"]}))
        outer.start("sub")
        outer.edge("sub", END)
        result = await GraphEngine(rt, outer.compile()).start({}, principal=USER, run_id="p")
        assert result.phase == "done" and result.state["x"] == 1
        await assert_on_parents_runtime(store, "p/sub.0", cipher, seen, clock)


# --- children share what the parent has left ------------------------------------------


async def test_children_started_one_after_another_share_the_parents_budget(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        worker = Engine(
            store,
            ScriptedModel(lambda m: say("done", usage=dollars(6))),
            Tools([]),
            prices=PRICES,
            agent="w",
        )

        @tool(idempotent=True)
        async def research(topic: str, context: ToolContext) -> str:
            """Ask five workers in turn."""
            for i in range(5):
                await run_child(worker, f"{context.run_id}/{context.call_id}/{i}", topic, context)
            return "ok"

        parent = Engine(
            store,
            ScriptedModel([call("research", '{"topic": "x"}'), say("ok")]),
            Tools([research]),
            prices=PRICES,
        )
        result = await parent.start(
            "go", principal=USER, run_id="p", limits=Limits(max_cost_usd=10)
        )
        assert result.phase is Phase.LIMIT_EXCEEDED
        assert result.cost_usd <= 12 + 1e-9  # the ceiling plus the one call that crossed it
        assert await store.read("p/call_1_0/0") and await store.read("p/call_1_0/1")
        assert await store.read("p/call_1_0/2") == []  # never started on an exhausted budget


# --- a child's spend is reported however it ends --------------------------------------


class SpendsThenHangs:
    """A model that spends on its first turn and never answers its second."""

    name = "scripted"

    def __init__(self, hang: anyio.Event) -> None:
        self.hang = hang

    async def respond(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> ModelTurn:
        if not any(m.role == "assistant" for m in messages):
            return ModelTurn(tool_calls=(ProposedCall("c1", "noop", "{}"),), usage=dollars(3))
        await self.hang.wait()  # never set: only the tool's timeout ends this child
        raise AssertionError("the hang was released")


@tool(idempotent=True)
def noop() -> str:
    """Do nothing."""
    return "ok"


async def test_a_child_cancelled_by_the_tools_timeout_reports_what_it_spent(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        worker = Engine(
            store, SpendsThenHangs(anyio.Event()), Tools([noop]), prices=PRICES, agent="w"
        )
        # the timeout is what ends the child (its second turn never answers); it only has
        # to leave room for the first turn to be recorded
        ask = agent_tool(worker, name="ask", description="Ask the worker.", timeout_s=0.2)
        parent = Engine(
            store,
            ScriptedModel([call("ask", '{"task": "x"}'), say("ok")]),
            Tools([ask]),
            prices=PRICES,
        )
        result = await parent.start("go", principal=USER, run_id="p")
        child = fold_run(await events_of(store, "p/call_1_0"))
        assert child.phase == "cancelled" and child.cost_nusd == 3 * 10**9
        failed = [e for e in await events_of(store, "p") if isinstance(e, ToolFailed)]
        assert len(failed) == 1 and failed[0].timed_out
        assert failed[0].cost_nusd == child.cost_nusd and failed[0].child_run_id == "p/call_1_0"
        assert result.cost_usd == 3


async def test_a_retried_node_counts_its_childs_spend_once(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        worker = Engine(
            store,
            ScriptedModel(lambda m: say("done", usage=dollars(2))),
            Tools([]),
            prices=PRICES,
            agent="w",
        )

        async def ask(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
            await run_child(worker, f"{ctx.run_id}/{ctx.key}", "x", ctx)
            raise RuntimeError("post-processing failed")

        g = Graph("retried")
        g.add_node("ask", ask, retry=Retry(attempts=3, base_delay_s=0))
        g.start("ask")
        g.edge("ask", END)
        result = await GraphEngine(store, g.compile()).start({}, principal=USER, run_id="g")
        assert result.phase == "failed"
        assert result.cost_usd == 2


# --- a graph run's deadline and its children's end ------------------------------------


async def test_a_graph_step_that_never_ends_is_cut_at_the_runs_deadline(tmp_path: Path) -> None:
    never = anyio.Event()

    async def stuck(state: dict[str, Any]) -> dict[str, Any]:
        await never.wait()
        return {}

    g = Graph("stuck")
    g.add_node("stuck", stuck)
    g.start("stuck")
    g.edge("stuck", END)
    async with SqliteStore.open(tmp_path / "log.db") as store:
        # fail_after guards against hanging on a step that is never cut; it measures nothing
        with anyio.fail_after(30):
            result = await GraphEngine(store, g.compile()).start(
                {}, principal=USER, run_id="g", limits=Limits(deadline_s=0.05)
            )
        assert result.phase == "limit_exceeded"
        last = (await events_of(store, "g"))[-1]
        assert isinstance(last, LimitExceeded) and last.limit == "deadline"


async def test_a_subgraph_child_waiting_for_review_ends_with_its_parents_node(
    tmp_path: Path,
) -> None:
    async def act(state: dict[str, Any]) -> dict[str, Any]:
        return {"x": 1}

    inner = Graph("inner")
    inner.add_node("act", act)
    inner.start("act")
    inner.edge("act", END)
    async with SqliteStore.open(tmp_path / "log.db") as store:
        child = GraphEngine(store, inner.compile(), review_before=frozenset({"act"}))
        outer = Graph("outer")
        outer.add_node("sub", subgraph(child, inputs=lambda s: {}, outputs=lambda s: {}))
        outer.start("sub")
        outer.edge("sub", END)
        result = await GraphEngine(store, outer.compile()).start({}, principal=USER, run_id="p")
        assert result.phase == "failed"
        runs = [r.run_id for r in await store.runs()]
        assert sorted(runs) == ["p", "p/sub.0"]
        for run_id in runs:
            state = fold_run(await events_of(store, run_id))
            assert state.terminal, f"{run_id} was left {state.phase}"
        assert isinstance((await events_of(store, "p/sub.0"))[-1], RunCancelled)


# --- a model turn that cannot be recorded ---------------------------------------------


async def test_a_turn_that_cannot_be_priced_ends_the_run_and_is_asked_once(tmp_path: Path) -> None:
    model = ScriptedModel(lambda m: say("hi", usage=Usage(input_tokens=1000)), name="unpriced")
    strict = PriceTable({"priced": Price(input_per_mtok=1.0, output_per_mtok=1.0)}, strict=True)
    async with SqliteStore.open(tmp_path / "log.db") as store:
        result = await Engine(store, model, Tools([]), prices=strict).start(
            "go", principal=USER, run_id="r"
        )
        assert result.phase is Phase.FAILED
        last = (await events_of(store, "r"))[-1]
        assert isinstance(last, RunFailed) and last.code == "config_error"
        assert model.calls == 1


# --- graph replay re-decides in the stored form ---------------------------------------

CARD = "4111111111111111"


async def test_replay_of_a_redacted_graph_run_is_identical(tmp_path: Path) -> None:
    async def plan(state: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def each(state: dict[str, Any]) -> dict[str, Any]:
        return {}

    g = Graph("cards")
    g.add_node("plan", plan)
    g.add_node("each", each)
    g.add_node("done", plan)
    g.start("plan")
    g.map("plan", "each", over=lambda s: [f"card {CARD}"], then="done")
    g.edge("done", END)
    async with SqliteStore.open(tmp_path / "log.db") as store:
        engine = GraphEngine(
            store, g.compile(), redaction=Redaction(patterns={"card": r"\b\d{16}\b"})
        )
        assert (await engine.start({}, principal=USER, run_id="g")).phase == "done"
        report = await engine.replay("g")
        assert CARD not in repr(report)
        assert report.identical, report.divergence


async def test_replay_without_the_runs_review_diverges_at_the_review(tmp_path: Path) -> None:
    async def step(state: dict[str, Any]) -> dict[str, Any]:
        return {"n": state.get("n", 0) + 1}

    g = Graph("reviewed")
    g.add_node("a", step)
    g.add_node("b", step)
    g.start("a")
    g.edge("a", "b")
    g.edge("b", END)
    graph = g.compile()
    async with SqliteStore.open(tmp_path / "log.db") as store:
        reviewed = GraphEngine(store, graph, review_before=frozenset({"b"}))
        assert (await reviewed.start({}, principal=USER, run_id="g")).phase == "awaiting_review"
        await review_graph_run(store, "g", "approve", by="ann")
        assert (await reviewed.resume("g")).phase == "done"
        assert (await reviewed.replay("g")).identical
        events = await events_of(store, "g")
        at = next(i for i, e in enumerate(events) if isinstance(e, ReviewRequested))
        report = await GraphEngine(store, graph).replay("g")
        assert report.divergence is not None and report.divergence.seq == at


# --- a migration names what changes next ----------------------------------------------


async def node_a_first(state: dict[str, Any]) -> dict[str, Any]:
    return {"a": 1}


async def node_a_migrated(state: dict[str, Any]) -> dict[str, Any]:
    return {"a": 2}


async def node_b(state: dict[str, Any]) -> dict[str, Any]:
    return {"b": 1}


async def node_c_first(state: dict[str, Any]) -> dict[str, Any]:
    return {"c": 1}


async def node_c_changed(state: dict[str, Any]) -> dict[str, Any]:
    return {"c": 2}


def three_nodes(store: SqliteStore, a: Any, c: Any) -> GraphEngine:
    g = Graph("three")
    g.add_node("a", a)
    g.add_node("b", node_b)
    g.add_node("c", c)
    g.start("a")
    g.edge("a", "b")
    g.edge("b", "c")
    g.edge("c", END)
    return GraphEngine(store, g.compile(), review_before=frozenset({"b"}))


async def test_definition_changed_after_a_migration_names_only_what_changed_since(
    tmp_path: Path,
) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        first = three_nodes(store, node_a_first, node_c_first)
        assert (await first.start({}, principal=USER, run_id="g")).phase == "awaiting_review"
        migrated = three_nodes(store, node_a_migrated, node_c_first)
        assert (await migrated.resume("g", migration="a-v2")).phase == "awaiting_review"
        with pytest.raises(DefinitionChanged) as raised:
            await three_nodes(store, node_a_migrated, node_c_changed).resume("g")
        assert raised.value.changed == ("node:c",)
