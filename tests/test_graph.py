"""Graph workflows: validated when built, deterministic whatever order branches finish in,
resumable and replayable from the log."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
import pytest

from router import (
    ConfigError,
    Limits,
    ManualClock,
    MemoryStore,
    Principal,
    Retry,
    Runtime,
    SqliteStore,
)
from router.core.events import decode_event, encode_event
from router.core.protocols import Store
from router.graph import END, Graph, GraphEngine, add, append

pytestmark = pytest.mark.anyio
USER = Principal(id="u")


async def classify(state: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "urgent" if "now" in state["text"] else "routine"}


async def summarize(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": f"{state['kind']}: {len(state.get('notes', []))} notes, "
        f"total {state.get('total', 0)}"
    }


def triage(order: list[int] | None = None) -> Graph:
    """classify -> urgent: 8 branches in parallel | routine: a map over items -> summarize."""
    g = Graph("triage", reducers={"notes": append, "total": add})
    g.add_node("classify", classify)
    gates = [anyio.Event() for _ in range(8)]

    def branch(i: int) -> Any:
        async def run(state: dict[str, Any]) -> dict[str, Any]:
            if order is not None:  # finish in the given order, whatever the scheduling
                position = order.index(i)
                if position:
                    await gates[order[position - 1]].wait()
            gates[i].set()
            return {"notes": [f"branch {i}"], "total": i}

        return run

    for i in range(8):
        g.add_node(f"b{i}", branch(i))
    g.add_node("urgent", lambda state: _noop())
    g.add_node("routine", lambda state: _noop())

    async def score(state: dict[str, Any]) -> dict[str, Any]:
        return {"notes": [f"item {state['item']}"], "total": state["item"]}

    g.add_node("score", score)
    g.add_node("summarize", summarize)
    g.start("classify")
    g.route("classify", lambda s: s["kind"], targets={"urgent", "routine"})
    g.fanout("urgent", [f"b{i}" for i in range(8)], then="summarize")
    g.map("routine", "score", over=lambda s: s["items"], then="summarize")
    g.edge("summarize", END)
    return g


async def _noop() -> dict[str, Any]:
    return {}


def without_time(payloads: list[bytes]) -> list[bytes]:
    """Events with their timings (when, how long) set aside."""
    from msgspec.structs import replace

    out = []
    for p in payloads:
        event = replace(decode_event(p), at=0)
        if hasattr(event, "latency_us"):
            event = replace(event, latency_us=0)
        out.append(encode_event(event))
    return out


async def test_eight_branches_finishing_in_any_order_give_the_same_state_and_events() -> None:
    logs, states = [], []
    for seed in range(5):
        order = list(range(8))
        random.Random(seed).shuffle(order)
        store = MemoryStore()
        engine = GraphEngine(Runtime(store, clock=ManualClock(0, 3)), triage(order).compile())
        result = await engine.start({"text": "fix it now", "items": []}, principal=USER, run_id="r")
        assert result.phase == "done"
        states.append(result.state)
        logs.append(without_time([s.payload for s in await store.read("r")]))
    assert all(s == states[0] for s in states) and all(log == logs[0] for log in logs)
    assert states[0]["notes"] == [f"branch {i}" for i in range(8)]  # merged in declaration order
    assert states[0]["summary"] == "urgent: 8 notes, total 28"


async def test_a_graph_runs_lease_rides_with_its_first_and_last_batch(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        engine = GraphEngine(store, triage().compile())
        result = await engine.start({"text": "fix it now", "items": []}, principal=USER, run_id="r")
        assert result.phase == "done"
        assert store.commits == store.appends  # no transaction of the lease's own
        await store.acquire_lease("r", "someone else", 60)  # released with the last batch


async def test_a_map_runs_a_node_per_item_and_merges_in_item_order() -> None:
    engine = GraphEngine(MemoryStore(), triage().compile())
    result = await engine.start({"text": "whenever", "items": [3, 1, 2]}, principal=USER)
    assert result.state["notes"] == ["item 3", "item 1", "item 2"] and result.state["total"] == 6
    assert result.steps == 4  # classify, routine, 3 x score, summarize


def test_a_graph_is_validated_when_built() -> None:
    g = Graph("bad")
    g.add_node("a", _noop_node)
    with pytest.raises(ConfigError, match="no start"):
        g.compile()
    g.start("a")
    with pytest.raises(ConfigError, match="no outgoing edge"):
        g.compile()
    g.edge("a", "ghost")
    with pytest.raises(ConfigError, match="unknown node 'ghost'"):
        g.compile()
    h = Graph("island")
    h.add_node("a", _noop_node)
    h.add_node("b", _noop_node)
    h.start("a")
    h.edge("a", END)
    h.edge("b", END)
    with pytest.raises(ConfigError, match=r"unreachable nodes \['b'\]"):
        h.compile()
    with pytest.raises(ConfigError, match="already"):
        h.add_node("a", _noop_node)
    assert "classify -.-> urgent" in triage().compile().mermaid()


async def _noop_node(state: dict[str, Any]) -> dict[str, Any]:
    return {}


async def test_retries_failures_cycles_and_bad_routes_end_the_run_by_name() -> None:
    calls: list[int] = []

    async def flaky(state: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return {"n": state.get("n", 0) + 1}

    g = Graph("loop")
    g.add_node("flaky", flaky, retry=Retry(attempts=3, base_delay_s=0))
    g.start("flaky")
    g.route("flaky", lambda s: "flaky" if s["n"] < 100 else END, targets={"flaky", END})
    result = await GraphEngine(MemoryStore(), g.compile()).start(
        {}, principal=USER, limits=Limits(max_steps=5)
    )
    assert (
        result.phase == "limit_exceeded"
        and result.reason.startswith("max_steps")
        and result.state["n"] == 5
    )

    async def broken(state: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("no")

    h = Graph("broken")
    h.add_node("x", broken)
    h.start("x")
    h.edge("x", END)
    failed = await GraphEngine(MemoryStore(), h.compile()).start({}, principal=USER)
    assert failed.phase == "failed" and "ValueError: no" in failed.reason

    r = Graph("lost")
    r.add_node("x", _noop_node)
    r.start("x")
    r.route("x", lambda s: "nowhere", targets={END})
    lost = await GraphEngine(MemoryStore(), r.compile()).start({}, principal=USER)
    assert lost.phase == "failed" and "nowhere" in lost.reason


class Crash(BaseException):
    pass


async def test_a_graph_run_resumes_after_a_crash_and_replays(tmp_path: Path) -> None:
    crashed = False

    async def fragile(state: dict[str, Any]) -> dict[str, Any]:
        nonlocal crashed
        if not crashed:
            crashed = True
            raise Crash
        return {"notes": ["fragile"]}

    def build() -> Graph:
        g2 = Graph("resumable", reducers={"notes": append})
        g2.add_node("classify", classify)
        g2.add_node("fragile", fragile)
        g2.add_node("summarize", summarize)
        g2.start("classify")
        g2.edge("classify", "fragile")
        g2.edge("fragile", "summarize")
        g2.edge("summarize", END)
        return g2

    async with SqliteStore.open(tmp_path / "log.db") as store:
        engine = GraphEngine(Runtime(store, owner="o"), build().compile())
        with pytest.raises(Crash):
            await engine.start({"text": "now"}, principal=USER, run_id="r")
        await store.release_lease("r", "o")
        result = await engine.resume("r")
        assert result.phase == "done" and result.state["summary"] == "urgent: 1 notes, total 0"
        assert (await engine.replay("r")).identical
        changed = Graph("resumable")
        changed.add_node("classify", classify)
        changed.add_node("fragile", fragile)
        changed.add_node("summarize", summarize)
        changed.start("classify")
        changed.route("classify", lambda s: "summarize", targets={"fragile", "summarize"})
        changed.edge("fragile", "summarize")
        changed.edge("summarize", END)
        report = await GraphEngine(store, changed.compile()).replay("r")
        assert report.divergence is not None and '"node":"fragile"' in report.divergence.expected


async def test_cancelling_a_graph_run_records_it() -> None:
    started = anyio.Event()

    async def wait(state: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await anyio.sleep_forever()
        return {}

    g = Graph("wait")
    g.add_node("wait", wait)
    g.start("wait")
    g.edge("wait", END)
    store: Store = MemoryStore()
    engine = GraphEngine(store, g.compile())
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: engine.start({}, principal=USER, run_id="r"))
        await started.wait()
        tg.cancel_scope.cancel()
    assert [s.kind for s in await store.read("r")][-1] == "run_cancelled"


def test_definitions_do_not_depend_on_the_process() -> None:
    import os
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, 'tests'); from test_graph import triage; "
        "from router.cli.demo import demo_engine; from router import MemoryStore; "
        "import tempfile, os; crm = os.path.join(tempfile.mkdtemp(), 'c.db'); "
        "print(triage().compile().definition, demo_engine(MemoryStore(), crm).definition)"
    )
    root = Path(__file__).resolve().parents[1]
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


async def test_a_subgraph_runs_as_a_child_run_and_resumes_with_its_parent() -> None:
    from router.graph import subgraph

    store = MemoryStore()
    inner = Graph("inner", reducers={"seen": append})

    async def double(state: dict[str, Any]) -> dict[str, Any]:
        return {"value": state["value"] * 2, "seen": ["inner"]}

    inner.add_node("double", double)
    inner.start("double")
    inner.edge("double", END)
    inner_engine = GraphEngine(store, inner.compile())

    outer = Graph("outer")
    outer.add_node(
        "call",
        subgraph(
            inner_engine, inputs=lambda s: {"value": s["n"]}, outputs=lambda s: {"n": s["value"]}
        ),
    )
    outer.start("call")
    outer.route("call", lambda s: END if s["n"] >= 8 else "call", targets={"call", END})
    result = await GraphEngine(store, outer.compile()).start({"n": 1}, principal=USER, run_id="o")
    assert result.phase == "done" and result.state["n"] == 8 and result.steps == 3
    children = sorted(r.run_id for r in await store.runs() if r.run_id.startswith("o/"))
    assert children == ["o/call.0", "o/call.1", "o/call.2"]
    first = decode_event((await store.read("o/call.0"))[0].payload)
    assert first.parent_run_id == "o"  # type: ignore[attr-defined]


async def test_a_graph_run_waits_for_review_before_and_after_chosen_nodes() -> None:
    from router import DecisionError, review_graph_run

    paid: list[int] = []

    async def draft(state: dict[str, Any]) -> dict[str, Any]:
        return {"amount": 120}

    async def pay(state: dict[str, Any]) -> dict[str, Any]:
        paid.append(state["amount"])
        return {"paid": True}

    g = Graph("refund")
    g.add_node("draft", draft)
    g.add_node("pay", pay)
    g.start("draft")
    g.edge("draft", "pay")
    g.edge("pay", END)
    flow = g.compile()
    store = MemoryStore()
    engine = GraphEngine(store, flow, review_before=frozenset({"pay"}))
    waiting = await engine.start({}, principal=USER, run_id="r")
    assert waiting.phase == "awaiting_review" and paid == []
    assert (
        await engine.resume("r")
    ).phase == "awaiting_review"  # waits however often it is resumed
    assert await review_graph_run(store, "r", "approve", by="ann") == "before_node"
    done = await engine.resume("r")
    assert done.phase == "done" and paid == [120]
    with pytest.raises(DecisionError):
        await review_graph_run(store, "r", "approve")

    checked = GraphEngine(store, flow, review_after=frozenset({"draft"}))
    held = await checked.start({}, principal=USER, run_id="s")
    assert held.phase == "awaiting_review" and held.state["amount"] == 120
    await review_graph_run(store, "s", "reject", by="ann", note="too much")
    rejected = await checked.resume("s")
    assert rejected.phase == "failed" and "too much" in rejected.reason and paid == [120]
    assert (await checked.replay("s")).identical
    with pytest.raises(ConfigError):
        GraphEngine(store, flow, review_before=frozenset({"nope"}))
